// Small DOM helpers and the words the client uses for errors and metrics.

/** h("button.primary", {onclick}, "Text", child...) -> an element. Text is always text. */
export function h(tag, attrs, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name || "div");
  if (classes.length) el.className = classes.join(" ");
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs); attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el, ...children) { el.replaceChildren(); for (const c of children.flat()) if (c) el.append(c); return el; }

let uid = 0;
export function id(prefix = "f") { uid += 1; return `${prefix}-${uid}`; }

/** A labelled form field. */
export function field(label, input, hint) {
  input.id = input.id || id();
  const hintEl = hint ? h("small.hint", { id: input.id + "-hint" }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div.field", h("label", { for: input.id }, label), input, hintEl);
}

function fieldName(f) {
  return String(f || "").replace(/^body\./, "").replace(/^query\./, "").replace(/_/g, " ");
}

/** Plain words for any ApiError (or other error). */
export function errorText(e) {
  if (!e) return "Something went wrong.";
  if (e.status === undefined) return e.message || String(e);
  const msg = e.message || "";
  switch (e.status) {
    case 0: return msg;
    case 401: return e.code === "invalid_credentials" || /password|credential/i.test(msg)
      ? "That email and password do not match an account." : "Your session has ended: please log in again.";
    case 403: return `Not allowed: ${msg}`;
    case 404: return `Not found: ${msg || "it may have been deleted, or it is private."}`;
    case 409: return `That cannot be done right now: ${msg}`;
    case 413: return `Too large: ${msg}`;
    case 415: return `Unsupported file type: ${msg}`;
    case 422: {
      const errs = e.details && Array.isArray(e.details.errors) ? e.details.errors : null;
      if (errs && errs.length) return "Please check: " + errs.map((x) => `${fieldName(x.field)}: ${x.message}`).join("; ");
      return `Please check: ${msg}`;
    }
    case 429: {
      const wait = e.retryAfter != null ? Math.ceil(e.retryAfter) : null;
      return wait != null ? `Too many requests: please wait ${wait} s and try again.` : "Too many requests: please wait a moment and try again.";
    }
    case 503: return `A service is temporarily unavailable (${msg}). Try again in a minute.`;
    default:
      if (e.status >= 500) {
        const rid = e.details && e.details.request_id;
        return `The server failed${rid ? ` (request id ${rid})` : ""}. Try again; if it persists, report the id.`;
      }
      return msg || `Error ${e.status}`;
  }
}

/** An alert box (role=alert) for a form; returns {show(err|string, kind), clear()}. */
export function messageBox() {
  const el = h("div.msg", { role: "alert", "aria-live": "assertive", hidden: true });
  let timer = null;
  return {
    el,
    show(what, kind = "error") {
      clearInterval(timer);
      el.hidden = false;
      el.className = `msg ${kind}`;
      el.textContent = typeof what === "string" ? what : errorText(what);
      if (what && what.status === 429 && what.retryAfter) {
        let left = Math.ceil(what.retryAfter);
        timer = setInterval(() => {
          left -= 1;
          el.textContent = left > 0 ? `Too many requests: please wait ${left} s and try again.` : "You can try again now.";
          if (left <= 0) clearInterval(timer);
        }, 1000);
      }
    },
    clear() { clearInterval(timer); el.hidden = true; el.textContent = ""; },
  };
}

const live = () => document.getElementById("live");
export function announce(text) { const el = live(); if (el) { el.textContent = ""; setTimeout(() => { el.textContent = text; }, 50); } }

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function when(iso) { try { return new Date(iso).toLocaleString(); } catch { return iso; } }

// ---- metrics in words ------------------------------------------------------------------------
export function deltaWords(de) {
  if (de == null || !Number.isFinite(de)) return "";
  if (de < 1) return "not visible to the eye";
  if (de < 2) return "barely visible, only side by side";
  if (de < 3.5) return "visible when you compare closely";
  if (de < 6) return "clearly visible";
  return "a large difference";
}
const num = (v, d = 1) => (v == null || !Number.isFinite(+v) ? "?" : (+v).toFixed(d));

/** Sentences for a style's metrics: holdout (photos it did not learn from) first. */
export function metricsSentences(m) {
  if (!m) return [];
  const out = [];
  const flatHoldout = m.holdout === undefined && m.delta_e2000_mean !== undefined;
  if (m.holdout && typeof m.holdout === "object") {
    const ho = m.holdout;
    out.push(`On photos it did not learn from, the difference from your edits is ${num(ho.delta_e2000_mean, 2)} ΔE on average (${deltaWords(ho.delta_e2000_mean)}), ${num(ho.delta_e2000_p95, 2)} ΔE on the hardest 5 % of pixels; ${num(ho.psnr)} dB PSNR.`);
    const base = m.identity_holdout || ho.identity;
    if (base && base.delta_e2000_mean != null) {
      out.push(`Doing nothing would be ${num(base.delta_e2000_mean, 2)} ΔE away from your edits${base.psnr != null ? ` (${num(base.psnr)} dB)` : ""}.`);
    }
  } else if (m.holdout === null) {
    out.push(`Not measured on unseen photos${m.holdout_reason ? `: ${m.holdout_reason}` : " (it needs at least 2 pairs)"}.`);
  } else if (flatHoldout) {
    out.push(`On pixels held back from learning, the difference from your edits is ${num(m.delta_e2000_mean, 2)} ΔE on average (${deltaWords(m.delta_e2000_mean)}), ${num(m.delta_e2000_p95, 2)} ΔE on the hardest 5 %; ${num(m.psnr)} dB PSNR. These pixels come from the training photos, so new photos may differ more.`);
  }
  if (m.fit && typeof m.fit === "object") {
    out.push(`On the photos it learned from: ${num(m.fit.delta_e2000_mean, 2)} ΔE on average (${deltaWords(m.fit.delta_e2000_mean)}).`);
  }
  if (m.model && typeof m.model === "string") out.push(`Model used: ${m.model}.`);
  // metrics.auto (which model) and metrics.selection (adaptive_3dlut: which of its variants):
  // { chosen, criterion, candidates: { name: { delta_e2000_mean, ... } | { error } } }
  for (const [key, what] of [["auto", "Models"], ["selection", "Variants"]]) {
    const sel = m[key];
    if (!sel || typeof sel !== "object" || !sel.chosen) continue;
    const tried = Object.entries(sel.candidates || {}).map(([name, c]) =>
      c && c.delta_e2000_mean != null ? `${name} ${num(c.delta_e2000_mean, 2)} ΔE` : `${name} (failed)`);
    out.push(`${what} tried${tried.length ? `: ${tried.join(", ")}` : ""}; kept ${sel.chosen}, the closest to your edits on data it did not learn from.`);
  }
  return out;
}

/** An apply result's `coverage` (the share of the photo's pixels whose colors none of the
 * style's examples showed) as a sentence, or "" when the style records none or the share is
 * small (under 5 %). */
export function coverageSentence(result) {
  const c = result && result.coverage;
  const share = c ? Number(c.unseen_share ?? NaN) : NaN;
  if (!(share >= 0.05)) return ""; // no record, not a number, or too small to mention
  return `${Math.round(100 * share)} % of this photo's colors were in none of the style's examples: there the look is a guess. A pair showing such colors would teach it.`;
}

export function warningsOf(m) {
  if (!m || !m.warnings) return [];
  const w = Array.isArray(m.warnings) ? m.warnings : [m.warnings];
  return w.map((x) => (typeof x === "string" ? x : x.message || JSON.stringify(x)));
}

export function stars(avg, count) {
  if (!count) return "not rated yet";
  return `${"★".repeat(Math.round(avg))}${"☆".repeat(5 - Math.round(avg))} ${avg.toFixed(1)} (${count})`;
}
