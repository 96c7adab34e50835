// PicFilter web client: hash routes, one function per screen.
import { api, login, logout, register, currentSession, onSession, schemaEnum, watchJob } from "./api.js";
import { h, clear, field, messageBox, announce, bytes, when, metricsSentences, coverageSentence, warningsOf, stars, errorText } from "./ui.js";
import { uploadMany, dropZone, pairByName } from "./upload.js";
import { fetchLut, createPreview, screenImage, median } from "./preview.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");

// ---- shared bits -----------------------------------------------------------------------------
const MODEL_HELP = {
  auto: "Tries the models below within the time budget and keeps the one that scores best on photos it did not learn from (recommended).",
  dlut: "A smooth color table learned directly: fast (seconds), the same look on every photo, exports exactly.",
  nilut: "A small neural color network baked to a table: smoother with few examples, slower to learn.",
  adaptive_3dlut: "Blends basis looks per photo (adapts to each image's light); needs before/after pairs; slowest.",
};
const EXPORT_HELP = {
  cube: "Adobe/Resolve .cube: DaVinci Resolve (LUTs folder), Premiere Pro and After Effects (Lumetri > Creative > Look), Photoshop (Color Lookup layer), OBS (Apply LUT filter), ffmpeg (-vf lut3d=file.cube), darktable (lut 3D module), Final Cut Pro (Custom LUT).",
  haldclut: "HaldCLUT .png (16-bit): darktable (lut 3D) and RawTherapee (film simulation), GIMP with G'MIC, ImageMagick (-hald-clut), ffmpeg (haldclut filter).",
  "3dl": ".3dl: Autodesk Flame/Lustre, Nuke, OpenColorIO; ffmpeg's lut3d reads the 17-point one.",
  spi3d: ".spi3d: OpenColorIO configs, Nuke, Blender, Krita.",
  csp: ".csp (cineSpace): OpenColorIO configs, Nuke, Resolve.",
  icc: ".icc (ICC v4 profile): assign it to an sRGB photo, or convert from it to sRGB, in a color-managed app: Photoshop (Edit > Assign/Convert to Profile), Capture One (ICC profile), LittleCMS tools (tificc -i look.icc).",
};

function page(title, ...children) {
  const h1 = h("h1", { tabindex: -1 }, title);
  clear(view, h1, ...children);
  document.title = `${title} · PicFilter`;
  h1.focus({ preventScroll: true });
}

function needLogin(title) {
  page(title, h("p", "Log in or create an account first: it takes a few seconds."),
    h("p", h("a.button", { href: "#/account" }, "Log in or sign up")));
}

async function allPages(path, limit = 100) {
  const items = []; let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const r = await api("GET", `${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items.push(...r.items); cursor = r.next_cursor;
  } while (cursor && items.length < 1000);
  return items;
}

function thumb(img, attrs = {}) {
  const src = img.thumbnail_url || null;
  return src ? h("img", { src, alt: img.filename, loading: "lazy", width: 160, height: 120, ...attrs })
    : h("div.thumb-missing", { role: "img", "aria-label": `${img.filename} (thumbnail not ready yet)` }, img.status === "confirmed" ? "…" : img.status);
}

function statusBadge(s) { return h(`span.badge.${s}`, s); }

function progressRow(label) {
  const bar = h("progress", { max: 100, value: 0, "aria-label": label });
  const text = h("span.state", "queued");
  const cancel = h("button.small.secondary", { type: "button", hidden: true }, "Cancel");
  return { el: h("div.job", h("span.name", label), bar, h("span", text, " ", cancel)), bar, text, cancel };
}

async function follow(job, row, pollMs) {
  row.cancel.hidden = false;
  row.cancel.setAttribute("aria-label", `Cancel: ${row.bar.getAttribute("aria-label")}`);
  row.cancel.onclick = async () => {
    row.cancel.disabled = true;
    try { await api("POST", `/jobs/${job.id}/cancel`); } catch (e) { row.text.textContent = errorText(e); row.cancel.disabled = false; }
  };
  try {
    return await watchJob(job.id, (j, how) => {
      row.bar.value = j.progress || 0;
      row.text.textContent = `${j.status}${j.status === "processing" ? ` ${j.progress || 0} %` : ""} (${how === "live" ? "live" : "checking every " + pollMs / 1000 + " s"})`;
    }, pollMs);
  } finally { row.cancel.hidden = true; }
}

function download(blob, name) {
  const a = h("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

// ---- account ---------------------------------------------------------------------------------
function accountView() {
  const s = currentSession();
  if (s && s.user) {
    const msg = messageBox();
    page("Your account",
      h("p", `Logged in as ${s.user.username} (${s.user.email}). Your session renews itself while this page is open.`),
      msg.el,
      h("button", { onclick: async () => { await logout(); announce("Logged out"); } }, "Log out"));
    return;
  }
  const loginMsg = messageBox(); const signMsg = messageBox();
  const le = h("input", { type: "email", name: "email", autocomplete: "email", required: true });
  const lp = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const loginForm = h("form.card", { "aria-labelledby": "login-h" }, h("h2", { id: "login-h" }, "Log in"),
    field("Email", le), field("Password", lp), loginMsg.el, h("button.primary", { type: "submit" }, "Log in"));
  loginForm.addEventListener("submit", async (e) => {
    e.preventDefault(); loginMsg.clear();
    try { await login(le.value.trim(), lp.value); location.hash = "#/photos"; } catch (err) { loginMsg.show(err); }
  });
  const se = h("input", { type: "email", name: "email", autocomplete: "email", required: true });
  const su = h("input", { name: "username", autocomplete: "username", required: true, minlength: 3, maxlength: 50, pattern: "[A-Za-z0-9_.\\-]{3,50}" });
  const sp = h("input", { type: "password", name: "new-password", autocomplete: "new-password", required: true, minlength: 8 });
  const signForm = h("form.card", { "aria-labelledby": "signup-h" }, h("h2", { id: "signup-h" }, "Create an account"),
    field("Email", se), field("Username", su, "3 to 50 letters, digits, '_', '.' or '-'; shown with your shared styles."),
    field("Password", sp, "At least 8 characters."), signMsg.el, h("button.primary", { type: "submit" }, "Sign up"));
  signForm.addEventListener("submit", async (e) => {
    e.preventDefault(); signMsg.clear();
    try { await register(se.value.trim(), su.value.trim(), sp.value); location.hash = "#/photos"; } catch (err) { signMsg.show(err); }
  });
  page("Log in or sign up", h("div.two", loginForm, signForm));
}

// ---- photos ----------------------------------------------------------------------------------
async function photosView() {
  if (!currentSession()) return needLogin("My photos");
  const msg = messageBox();
  const list = h("ul.uploads", { "aria-label": "Uploads" });
  const grid = h("ul.grid", { "aria-label": "My photos" });
  const refresh = async () => {
    try {
      const imgs = await allPages("/images");
      clear(grid, imgs.length ? imgs.map((img) => h("li.tile",
        thumb(img),
        h("span.name", img.filename),
        h("small", img.width ? `${img.width}×${img.height} · ${bytes(img.size)}` : img.status),
        h("button.small", { "aria-label": `Delete ${img.filename}`, onclick: async () => {
          if (!confirm(`Delete ${img.filename}?`)) return;
          try { await api("DELETE", `/images/${img.id}`); refresh(); announce(`${img.filename} deleted`); } catch (e) { msg.show(e); }
        } }, "Delete"))) : [h("li.empty", "No photos yet: drop some above.")]);
      if (imgs.some((i) => i.status === "confirmed" && !i.thumbnail_url)) setTimeout(() => { if (document.body.contains(grid)) refresh(); }, 3000);
    } catch (e) { msg.show(e); }
  };
  const zone = dropZone("Drop photos here (JPEG, PNG, WebP, HEIC, TIFF; up to 50 MB each) or", async (files) => {
    msg.clear();
    const res = await uploadMany(files, list, { storeExif: document.getElementById("store-exif").checked });
    const ok = res.filter((r) => r.image).length;
    announce(`${ok} of ${files.length} uploaded`);
    if (ok < files.length) msg.show(`${files.length - ok} file(s) were refused: see the reasons above.`, "warn");
    refresh();
  });
  const exif = h("input", { type: "checkbox", id: "store-exif" });
  page("My photos", zone, h("p", h("label.check", { for: "store-exif" }, exif, "Keep the photos' EXIF metadata (camera, lens, date; GPS is never kept)")),
    list, msg.el, h("h2", "All photos"), grid);
  refresh();
}

// ---- teach -----------------------------------------------------------------------------------
async function teachView(params) {
  if (!currentSession()) return needLogin("Teach a style");
  const msg = messageBox();
  let again = null; // ?style=ID: learn an existing style of mine again
  if (params && params.get("style")) {
    try { again = await api("GET", `/styles/${params.get("style")}`); } catch (e) { page("Teach a style", msg.el); msg.show(e); return; }
  }
  let images = [];
  const name = h("input", { name: "name", required: true, maxlength: 100, placeholder: "Golden hour" });
  const desc = h("textarea", { name: "description", rows: 2, maxlength: 5000 });
  const vis = h("select", { name: "visibility" }, ["private", "unlisted", "public"].map((v) => h("option", { value: v }, v)));
  const tags = h("input", { name: "tags", maxlength: 900 });
  const pairsBox = h("ol.pairs", { "aria-label": "Before and after pairs" });
  const refsBox = h("fieldset.refs", h("legend", "Reference photos (optional): make photos look like these"));
  const uploads = h("ul.uploads", { "aria-label": "Uploads" });

  const option = (img, selected) => h("option", { value: img.id, selected: selected === img.id }, img.filename);
  function addPair(before, after) {
    const b = h("select", { "aria-label": "Before photo" }, h("option", { value: "" }, "— before —"), images.map((i) => option(i, before)));
    const a = h("select", { "aria-label": "After (edited) photo" }, h("option", { value: "" }, "— after —"), images.map((i) => option(i, after)));
    const li = h("li.pair", field("Before", b), field("After", a),
      h("button.small", { type: "button", onclick: () => li.remove() }, "Remove pair"));
    pairsBox.append(li);
  }
  function drawRefs() {
    clear(refsBox, h("legend", "Reference photos (optional): make photos look like these"),
      images.length ? h("div.checks", images.map((i) => h("label.check", h("input", { type: "checkbox", value: i.id }), thumb(i, { width: 64, height: 48, alt: "" }), i.filename)))
        : h("p", "Upload photos first."));
  }
  async function loadImages() { images = (await allPages("/images")).filter((i) => i.status === "confirmed"); }

  const zone = dropZone("Drop before/after files here: x.jpg pairs with x-edit.jpg (or _edit, -after, -edited) — or", async (files) => {
    msg.clear();
    const res = (await uploadMany(files, uploads)).filter((r) => r.image).map((r) => ({ name: r.file.name, image: r.image }));
    await loadImages(); drawRefs();
    for (const li of [...pairsBox.children]) if (![...li.querySelectorAll("select")].some((s) => s.value)) li.remove();
    const { pairs, rest } = pairByName(res);
    for (const [b, a] of pairs) addPair(b.image.id, a.image.id);
    announce(`${pairs.length} pair(s) made from the file names`);
    if (rest.length) msg.show(`Not paired by name: ${rest.map((r) => r.name).join(", ")}. Pick them by hand below, or use them as references.`, "warn");
  });

  const models = (await schemaEnum("LearnRequest", "model").catch(() => null)) || { values: ["dlut", "nilut", "adaptive_3dlut"], default: "dlut" };
  const modelValues = models.values.length ? models.values : ["dlut"];
  const modelDefault = models.default || modelValues[0];
  const modelSet = h("fieldset.models", h("legend", "Model"),
    modelValues.map((m) => h("label.radio", h("input", { type: "radio", name: "model", value: m, checked: m === modelDefault }),
      h("strong", m), " — ", MODEL_HELP[m] || "")));

  const progress = h("div.progress-area");
  const result = h("section.result", { "aria-live": "polite" });
  const submit = h("button.primary", { type: "submit" }, "Start learning");
  const form = h("form",
    again ? h("div.card", h("p", "Learning ", h("a", { href: `#/style/${again.id}` }, again.name), " again: its name, description and visibility stay as they are (change them on ",
      h("a", { href: `#/style/${again.id}` }, "its page"), "). Its current model stays until the new one is ready."))
      : h("div.card", field("Style name", name), field("Description (optional)", desc),
        field("Tags (optional)", tags, "Separate tags with commas, e.g. warm, film, portrait."), field("Who can see it", vis, "Public styles appear in the community gallery.")),
    h("div.card", h("h2", "Before / after pairs"), zone, uploads, pairsBox,
      h("button.secondary", { type: "button", onclick: () => addPair() }, "Add a pair by hand")),
    h("div.card", refsBox), h("div.card", modelSet), msg.el, submit, progress, result);

  form.addEventListener("submit", async (e) => {
    e.preventDefault(); msg.clear();
    const pairs = [...pairsBox.children].map((li) => [...li.querySelectorAll("select")].map((s) => s.value))
      .filter(([b, a]) => b || a);
    if (pairs.some(([b, a]) => !b || !a)) return msg.show("Every pair needs both a before and an after photo.");
    const refs = [...refsBox.querySelectorAll("input:checked")].map((c) => c.value);
    if (!pairs.length && !refs.length) return msg.show("Give at least one before/after pair or one reference photo.");
    if (!again && !name.value.trim()) return msg.show("Give the style a name.");
    const model = form.querySelector("input[name=model]:checked").value;
    submit.disabled = true;
    try {
      const style = again || await api("POST", "/styles", { name: name.value.trim(), description: desc.value, tags: tagList(tags.value), visibility: vis.value });
      const job = await api("POST", `/styles/${style.id}/learn`, {
        model, pairs: pairs.map(([b, a]) => ({ before_image_id: b, after_image_id: a })), reference_image_ids: refs,
      });
      const row = progressRow("Learning progress");
      clear(progress, row.el);
      const done = await follow(job, row, 5000);
      if (done.status !== "completed") throw new Error(`Learning ${done.status}: ${done.error || "no reason given"}`);
      announce("The style is ready");
      const fresh = await api("GET", `/styles/${style.id}`);
      clear(result, styleSummary(fresh), h("p", h("a.button", { href: `#/apply?style=${fresh.id}` }, "Apply it to photos"), " ",
        h("a.button.secondary", { href: `#/style/${fresh.id}` }, "Open the style page")));
    } catch (err) { msg.show(err.status !== undefined ? err : err.message); } finally { submit.disabled = false; }
  });
  page(again ? `Learn “${again.name}” again` : "Teach a style", form);
  try { await loadImages(); drawRefs(); addPair(); } catch (e) { msg.show(e); }
}

function styleSummary(st) {
  const sentences = metricsSentences(st.metrics);
  const warns = warningsOf(st.metrics);
  return h("div.summary",
    st.preview_url ? h("img.preview", { src: st.preview_url, alt: `Preview of ${st.name}: before on the left, after on the right` }) : null,
    h("h2", `${st.name}`), h("p", statusBadge(st.status), ` ${st.model || ""}`),
    sentences.length ? h("ul.metrics", sentences.map((s) => h("li", s))) : null,
    warns.length ? h("div.msg.warn", { role: "note" }, h("strong", "Warning: "), warns.join(" ")) : null,
    st.error ? h("div.msg.error", st.error) : null);
}

// ---- my styles + import ----------------------------------------------------------------------
async function stylesView() {
  if (!currentSession()) return needLogin("My styles");
  const msg = messageBox(); const impMsg = messageBox();
  const list = h("ul.cards", { "aria-label": "My styles" });
  const file = h("input", { type: "file", accept: ".cube,.3dl,.png,.spi3d,.csp", required: true });
  const iname = h("input", { required: true, maxlength: 100 });
  const ivis = h("select", ["private", "unlisted", "public"].map((v) => h("option", { value: v }, v)));
  const idesc = h("textarea", { rows: 2, maxlength: 5000 });
  const itags = h("input", { maxlength: 900 });
  const imp = h("form.card", { "aria-labelledby": "imp-h" }, h("h2", { id: "imp-h" }, "Import a LUT file as a style"),
    field("LUT file", file, "A .cube or .3dl 3D LUT, or a HaldCLUT .png (from Resolve, Photoshop, RawTherapee, a LUT pack...)"), field("Name", iname), field("Description (optional)", idesc),
    field("Tags (optional)", itags, "Separate tags with commas."), field("Who can see it", ivis),
    impMsg.el, h("button.primary", { type: "submit" }, "Import"));
  file.addEventListener("change", () => { if (!iname.value && file.files[0]) iname.value = file.files[0].name.replace(/\.[^.]+$/, ""); });
  imp.addEventListener("submit", async (e) => {
    e.preventDefault(); impMsg.clear();
    const fd = new FormData(); fd.append("file", file.files[0]); fd.append("name", iname.value.trim()); fd.append("visibility", ivis.value);
    fd.append("description", idesc.value); for (const t of tagList(itags.value)) fd.append("tags", t);
    try { const st = await api("POST", "/styles/import", fd); impMsg.show(`Imported “${st.name}”.`, "ok"); load(); } catch (err) { impMsg.show(err); }
  });
  const load = async () => {
    try {
      const items = await allPages("/styles?owner=me");
      clear(list, items.length ? items.map(styleCard) : [h("li.empty", "No styles yet: teach one or import a LUT.")]);
    } catch (e) { msg.show(e); }
  };
  page("My styles", h("p", h("a.button", { href: "#/teach" }, "Teach a new style")), msg.el, list, imp);
  load();
}

function styleCard(st) {
  return h("li.card.style-card",
    st.preview_url ? h("img", { src: st.preview_url, alt: "", loading: "lazy", width: 320, height: 120 }) : h("div.thumb-missing", { "aria-hidden": "true" }, st.status),
    h("h3", h("a", { href: `#/style/${st.id}` }, st.name)),
    h("p.meta", `by ${st.owner.username} · ${st.model || "no model"} · `, statusBadge(st.status)),
    h("p.meta", `${stars(st.rating_avg, st.rating_count)} · used ${st.apply_count}× · ${st.comment_count} comment(s)`));
}

// ---- style page ------------------------------------------------------------------------------
async function styleView(id) {
  const msg = messageBox();
  let st;
  try { st = await api("GET", `/styles/${id}`); } catch (e) { page("Style", msg.el); msg.show(e); return; }
  const me = currentSession() && currentSession().user;
  const mine = me && me.id === st.owner.id;
  const meta = h("p.meta"); const about = h("div.about");
  const drawAbout = (s) => {
    clear(meta, "by ", h("a", { href: `#/community?owner=${encodeURIComponent(s.owner.username)}` }, s.owner.username),
      ` · ${s.visibility} · created ${when(s.created_at)}`);
    clear(about, s.description ? h("p.description", s.description) : null, tagLinks(s.tags));
  };
  drawAbout(st);
  const summary = styleSummary(st);
  const parts = [meta, summary, about, msg.el];
  const actions = h("div.actions");
  if (st.status === "ready" || st.model) actions.append(h("a.button", { href: `#/apply?style=${st.id}` }, "Apply to my photos"));
  if (me && st.model) {
    actions.append(h("button.secondary", { onclick: async () => {
      try { const f = await api("POST", `/styles/${st.id}/fork`); location.hash = `#/style/${f.id}`; announce("Forked: this copy is yours"); } catch (e) { msg.show(e); }
    } }, mine ? "Duplicate" : "Fork (make my own copy)"));
  }
  parts.push(actions);
  if (mine) {
    parts.push(ownerPanel(st, (fresh) => {
      st = fresh; drawAbout(fresh);
      view.querySelector("h1").textContent = fresh.name;
      summary.querySelector("h2").textContent = fresh.name;
      const img = summary.querySelector("img.preview");
      if (img) img.alt = `Preview of ${fresh.name}: before on the left, after on the right`;
      document.title = `${fresh.name} · PicFilter`;
      announce(`Saved: ${fresh.name}`);
    }));
  }
  if (me && st.model) parts.push(exportPanel(st));
  parts.push(await communityPanel(st, me, mine));
  page(st.name, ...parts);
}

const tagList = (text) => [...new Set(text.split(",").map((t) => t.trim().toLowerCase()).filter(Boolean))];

function tagLinks(tags) {
  return tags && tags.length ? h("p.tags", "Tags: ", tags.map((t, i) => [i ? ", " : "", h("a", { href: `#/community?tag=${encodeURIComponent(t)}` }, t)])) : null;
}

function ownerPanel(st, onSaved) {
  const msg = messageBox();
  const name = h("input", { name: "name", required: true, maxlength: 100, value: st.name });
  const desc = h("textarea", { name: "description", rows: 3, maxlength: 5000 }, st.description || "");
  const tags = h("input", { name: "tags", value: (st.tags || []).join(", "), maxlength: 900 });
  const vis = h("select", { name: "visibility" }, ["private", "unlisted", "public"].map((v) => h("option", { value: v, selected: v === st.visibility }, v)));
  const save = h("button.primary", { type: "submit" }, "Save changes");
  const form = h("form.card", { "aria-labelledby": "edit-h" }, h("h2", { id: "edit-h" }, "Edit this style"),
    field("Name", name), field("Description", desc), field("Tags", tags, "Separate tags with commas, e.g. warm, film, portrait."),
    field("Who can see it", vis, "Public styles appear in the community gallery."), msg.el, save, " ",
    h("a.button.secondary", { href: `#/teach?style=${st.id}` }, "Learn it again from other photos"), " ",
    h("button.danger", { type: "button", onclick: async () => {
      if (!confirm(`Delete the style “${st.name}”?`)) return;
      try { await api("DELETE", `/styles/${st.id}`); location.hash = "#/styles"; announce("Style deleted"); } catch (e) { msg.show(e); }
    } }, "Delete style"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault(); msg.clear();
    if (!name.value.trim()) return msg.show("Give the style a name.");
    save.disabled = true;
    try {
      const fresh = await api("PATCH", `/styles/${st.id}`, { name: name.value.trim(), description: desc.value, tags: tagList(tags.value), visibility: vis.value });
      st = fresh; tags.value = fresh.tags.join(", ");
      msg.show("Saved.", "ok");
      onSaved(fresh);
    } catch (err) { msg.show(err); } finally { save.disabled = false; }
  });
  return form;
}

function exportPanel(st) {
  const msg = messageBox();
  const fmt = h("select"); const size = h("select");
  const help = h("p.hint", { "aria-live": "polite" });
  const out = h("div");
  // a HaldCLUT's size is its level (level^2 points per axis); the other formats take a size
  let sizes = [17, 33, 65]; let sizeDefault = 33; let levels = [8, 12, 16];
  const fillSizes = () => {
    const hald = fmt.value === "haldclut";
    clear(size, (hald ? levels : sizes).map((v) => h("option", { value: v, selected: v === (hald ? levels[0] : sizeDefault) },
      hald ? `level ${v} (${v * v} points per axis)` : `${v} points per axis`)));
    help.textContent = EXPORT_HELP[fmt.value] || "";
  };
  Promise.all([schemaEnum("ExportRequest", "format"), schemaEnum("ExportRequest", "size"), schemaEnum("ExportRequest", "level")]).then(([f, s, l]) => {
    const formats = (f && f.values.length ? f.values : ["cube"]);
    if (s && s.values.length) { sizes = s.values; sizeDefault = s.default || 33; }
    if (l && l.values.length) levels = l.values.filter((v) => v !== null);
    clear(fmt, formats.map((v) => h("option", { value: v }, v)));
    fillSizes();
  });
  fmt.addEventListener("change", fillSizes);
  const btn = h("button.primary", { type: "submit" }, "Export");
  const form = h("form.card", { "aria-labelledby": "exp-h" }, h("h2", { id: "exp-h" }, "Export as a LUT file"),
    field("Format", fmt), help, field("Size", size, "33 suits most tools; 65 is finer and larger."), msg.el, btn, out);
  form.addEventListener("submit", async (e) => {
    e.preventDefault(); msg.clear(); btn.disabled = true;
    try {
      const body = fmt.value === "haldclut" ? { format: fmt.value, level: +size.value } : { format: fmt.value, size: +size.value };
      const job = await api("POST", `/styles/${st.id}/export`, body);
      const row = progressRow("Export progress"); clear(out, row.el);
      const done = await follow(job, row, 1000);
      if (done.status !== "completed") throw new Error(done.error || done.status);
      clear(out, h("p", h("a.button", { href: done.result.download_url, download: done.result.filename }, `Download ${done.result.filename}`)),
        h("p.hint", EXPORT_HELP[fmt.value] || ""));
    } catch (err) { msg.show(err.status !== undefined ? err : err.message); } finally { btn.disabled = false; }
  });
  return form;
}

async function communityPanel(st, me, mine) {
  const box = h("section.card", { "aria-labelledby": "com-h" }, h("h2", { id: "com-h" }, "Ratings and comments"));
  const msg = messageBox();
  const summary = h("p", { "aria-live": "polite" }, stars(st.rating_avg, st.rating_count));
  box.append(summary);
  if (me && !mine && st.visibility !== "private") {
    let my = null;
    try { my = (await api("GET", `/styles/${st.id}/rating`)).my_score; } catch { /* not rated */ }
    const withdraw = h("button.small.secondary", { type: "button", hidden: my === null, onclick: async () => {
      try {
        await api("DELETE", `/styles/${st.id}/rating`);
        const r = await api("GET", `/styles/${st.id}/rating`);
        summary.textContent = stars(r.rating_avg, r.rating_count);
        set.querySelectorAll("input").forEach((i) => { i.checked = false; });
        withdraw.hidden = true; announce("Rating removed");
      } catch (e) { msg.show(e); }
    } }, "Remove my rating");
    const set = h("fieldset.rating", h("legend", "Your rating"),
      [1, 2, 3, 4, 5].map((n) => h("label.star", h("input", { type: "radio", name: "score", value: n, checked: my === n,
        onchange: async () => {
          try { const r = await api("PUT", `/styles/${st.id}/rating`, { score: n }); summary.textContent = stars(r.rating_avg, r.rating_count); withdraw.hidden = false; announce(`Rated ${n} of 5`); } catch (e) { msg.show(e); }
        } }), h("span", `${n} ★`))), withdraw);
    box.append(set);
  }
  const list = h("ol.comments", { "aria-label": "Comments" });
  const load = async () => {
    try {
      const r = await api("GET", `/styles/${st.id}/comments?limit=100`);
      clear(list, r.items.length ? r.items.map((c) => commentItem(c, me, mine, msg, load)) : [h("li.empty", "No comments yet.")]);
    } catch (e) { msg.show(e); }
  };
  box.append(list, msg.el);
  if (me) {
    const body = h("textarea", { rows: 3, maxlength: 2000, required: true });
    const form = h("form", field("Add a comment", body), h("button.primary", { type: "submit" }, "Post comment"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault(); msg.clear();
      try { await api("POST", `/styles/${st.id}/comments`, { body: body.value }); body.value = ""; load(); announce("Comment posted"); } catch (err) { msg.show(err); }
    });
    box.append(form);
  } else box.append(h("p", h("a", { href: "#/account" }, "Log in"), " to rate and comment."));
  load();
  return box;
}

function commentItem(c, me, mine, msg, reload) {
  const own = me && me.id === c.author.id;
  const text = h("p.body", c.body);
  const tools = h("div.comment-tools");
  const li = h("li.comment", h("p.meta", `${c.author.username} · ${when(c.created_at)}${c.edited_at ? " (edited)" : ""}`), text, tools);
  const edit = own ? h("button.small.secondary", { type: "button", "aria-label": "Edit your comment", onclick: () => {
    const body = h("textarea", { rows: 3, maxlength: 2000, required: true }, c.body);
    const form = h("form.comment-edit", field("Changed comment", body),
      h("button.small", { type: "submit" }, "Save comment"), " ",
      h("button.small.secondary", { type: "button", onclick: () => { form.replaceWith(text); tools.hidden = false; edit.focus(); } }, "Cancel"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault(); msg.clear();
      try { await api("PATCH", `/comments/${c.id}`, { body: body.value }); announce("Comment saved"); reload(); } catch (err) { msg.show(err); }
    });
    text.replaceWith(form); tools.hidden = true; body.focus();
  } }, "Edit") : null;
  const del = me && (own || mine) ? h("button.small", { type: "button", "aria-label": own ? "Delete your comment" : `Delete the comment by ${c.author.username}`, onclick: async () => {
    try { await api("DELETE", `/comments/${c.id}`); announce("Comment deleted"); reload(); } catch (e) { msg.show(e); }
  } }, "Delete") : null;
  if (edit || del) tools.append(...[edit, " ", del].filter(Boolean));
  return li;
}

// ---- apply -----------------------------------------------------------------------------------
async function applyView(params) {
  if (!currentSession()) return needLogin("Apply a style");
  const msg = messageBox();
  let styles = []; let images = [];
  try {
    [styles, images] = await Promise.all([allPages("/styles?owner=me"), allPages("/images")]);
  } catch (e) { page("Apply a style", msg.el); msg.show(e); return; }
  styles = styles.filter((s) => s.model);
  images = images.filter((i) => i.status === "confirmed");
  const wanted = params.get("style");
  if (wanted && !styles.some((s) => s.id === wanted)) {
    try { const s = await api("GET", `/styles/${wanted}`); if (s.model) styles.unshift(s); } catch (e) { msg.show(e); }
  }
  const styleSel = h("select", { name: "style" }, styles.map((s) => h("option", { value: s.id, selected: s.id === wanted }, `${s.name} (${s.owner.username})`)));
  const strength = h("input", { id: "strength", type: "range", min: 0, max: 100, value: 100, step: 1, name: "strength" });
  const strengthOut = h("output", { for: "strength" }, "100 %");
  const split = h("input", { id: "split", type: "range", min: 0, max: 100, value: 0, step: 1, name: "split" });
  const canvas = h("canvas.preview-canvas", { role: "img", "aria-label": "Preview of the selected photo with the style" });
  const timing = h("p.hint", { id: "preview-timing", "aria-live": "off" });
  const adaptiveNote = h("p.hint", { hidden: true }, "This style adapts to each photo: the preview shows its average look, the full-resolution result may differ a little.");
  const noteFor = () => { const st = styles.find((x) => x.id === styleSel.value); adaptiveNote.hidden = !(st && st.model === "adaptive_3dlut"); };
  styleSel.addEventListener("change", noteFor);
  const checks = h("div.checks", images.map((i, n) => h("label.check", h("input", { type: "checkbox", name: "photo", value: i.id, checked: n === 0 }), thumb(i, { width: 64, height: 48, alt: "" }), i.filename)));
  const jobsBox = h("div.jobs");
  const preview = createPreview(canvas, { renderer: params.get("renderer") || "canvas" });
  window.__picfilterPreview = preview;
  let ready = false;

  const redraw = () => {
    strengthOut.textContent = `${strength.value} %`;
    if (!ready) return;
    const ms = preview.draw(strength.value / 100, split.value / 100);
    timing.textContent = `Preview updated in ${ms.toFixed(1)} ms (median ${median(preview.times).toFixed(1)} ms over ${preview.times.length} moves, ${preview.kind}).`;
  };
  strength.addEventListener("input", redraw); split.addEventListener("input", redraw);

  let generation = 0;
  let shown = null;
  async function loadPreview(pick) {
    const mine = ++generation;
    ready = false; canvas.dataset.ready = "0";
    const checked = [...checks.querySelectorAll("input:checked")].map((c) => c.value);
    const want = checked.includes(pick) ? pick : checked.includes(shown) ? shown : checked[0];
    const img = want && images.find((i) => i.id === want);
    if (!img || !styleSel.value) { timing.textContent = "Pick a style and a photo to see a preview."; return; }
    timing.textContent = `Loading the preview of ${img.filename}…`;
    try {
      const [lut, bitmap] = await Promise.all([fetchLut(api, styleSel.value), loadBitmap(img)]);
      if (mine !== generation) return; // a newer choice is loading
      preview.setImage(screenImage(bitmap, 1280));
      preview.setLut(lut);
      ready = true; shown = img.id; canvas.dataset.ready = "1"; canvas.dataset.image = img.filename;
      canvas.setAttribute("aria-label", `Preview of ${img.filename} with the style`);
      redraw();
    } catch (e) { msg.show(e.status !== undefined ? e : `The preview cannot be shown: ${e.message}`); }
  }
  styleSel.addEventListener("change", () => loadPreview(shown));
  checks.addEventListener("change", (e) => loadPreview(e.target.checked ? e.target.value : shown));

  const fmt = h("select", h("option", { value: "" }, "same as the original"), ["jpeg", "png", "webp"].map((f) => h("option", { value: f }, f)));
  const go = h("button.primary", { type: "submit" }, "Apply at full resolution");
  const form = h("form",
    styles.length ? field("Style", styleSel) : h("p", "No style yet: ", h("a", { href: "#/teach" }, "teach one"), " or pick one in the ", h("a", { href: "#/community" }, "community gallery"), "."),
    h("fieldset.card", h("legend", "Photos"), images.length ? checks : h("p", "No photos yet: ", h("a", { href: "#/photos" }, "upload some"), ".")),
    h("div.card.preview-box",
      h("div.sliders", h("div.field", h("label", { for: "strength" }, "Strength"), strength, strengthOut),
        h("div.field", h("label", { for: "split" }, "Before / after split (left of the line: before)"), split)),
      h("div.canvas-wrap", canvas), timing, adaptiveNote),
    field("File format", fmt), msg.el, go, jobsBox);
  form.addEventListener("submit", async (e) => {
    e.preventDefault(); msg.clear();
    const ids = [...checks.querySelectorAll("input:checked")].map((c) => c.value);
    if (!ids.length) return msg.show("Pick at least one photo.");
    go.disabled = true;
    try {
      const body = { image_ids: ids, strength: strength.value / 100 };
      if (fmt.value) body.format = fmt.value;
      const { jobs } = await api("POST", `/styles/${styleSel.value}/apply`, body);
      const list = h("ul.results", { "aria-label": "Results" });
      const all = h("button.secondary", { type: "button", disabled: true }, "Download all (zip)");
      clear(jobsBox, h("h2", "Results"), list, all);
      const finished = await Promise.all(jobs.map(async (job) => {
        const img = images.find((i) => i.id === job.image_id);
        const row = progressRow(img ? img.filename : job.id);
        const li = h("li", row.el); list.append(li);
        const done = await follow(job, row, 1000);
        if (done.status === "completed") {
          li.append(h("a.button.small", { href: done.result.result_url, download: "" }, `Download ${img ? img.filename : "result"} (${done.result.width}×${done.result.height} ${done.result.format})`));
          const unseen = coverageSentence(done.result);
          if (unseen) li.append(h("p.hint", unseen));
        } else li.append(h("span.msg.error", `${done.status}: ${done.error || ""}`));
        return done;
      }));
      const ok = finished.filter((j) => j.status === "completed");
      announce(`${ok.length} of ${jobs.length} photos done`);
      if (ok.length) {
        all.disabled = false;
        all.onclick = async () => {
          try { download(await api("POST", "/jobs/results.zip", { job_ids: ok.map((j) => j.id) }), "picfilter-results.zip"); } catch (err) { msg.show(err); }
        };
      }
    } catch (err) { msg.show(err); } finally { go.disabled = false; }
  });
  page("Apply a style", form);
  noteFor();
  loadPreview();
}

async function loadBitmap(img) {
  for (const url of [img.original_url, img.thumbnail_url]) {
    if (!url) continue;
    try {
      const resp = await fetch(url);
      if (!resp.ok) continue;
      return await createImageBitmap(await resp.blob(), { imageOrientation: "from-image" });
    } catch { /* the browser cannot decode it (HEIC, TIFF): try the thumbnail */ }
  }
  throw new Error("this photo cannot be decoded by the browser and has no thumbnail yet");
}

// ---- jobs ------------------------------------------------------------------------------------
const JOB_WORDS = { learn_style: "Learning", apply_style: "Applying", export_cube: "Exporting", thumbnail: "Making a thumbnail" };

async function jobsView(params) {
  if (!currentSession()) return needLogin("My jobs");
  const msg = messageBox();
  const status = h("select", { name: "status" }, [["", "any"], ["queued", "queued"], ["processing", "processing"], ["completed", "completed"],
    ["failed", "failed"], ["cancelled", "cancelled"]].map(([v, l]) => h("option", { value: v, selected: v === (params.get("status") || "") }, l)));
  const list = h("ul.job-list", { "aria-label": "Jobs" });
  const more = h("button.secondary", { type: "button", hidden: true }, "Show more");
  let cursor = null;
  const row = (j) => {
    const state = h("span", statusBadge(j.status), j.status === "processing" ? ` ${j.progress} %` : "");
    const what = h("span.name", JOB_WORDS[j.type] || j.type, " ", j.style_id ? h("a", { href: `#/style/${j.style_id}` }, "style") : null);
    const li = h("li.job-item", what, h("small", `started ${when(j.created_at)}${j.finished_at ? ` · finished ${when(j.finished_at)}` : ""}`), state);
    const r = j.result || {};
    if (j.status === "completed" && (r.result_url || r.download_url)) {
      li.append(h("a.button.small", { href: r.result_url || r.download_url, download: r.filename || "" },
        r.filename ? `Download ${r.filename}` : "Download the result"));
    }
    if (j.error) li.append(h("span.msg.error", j.error));
    if (j.status === "queued" || j.status === "processing") {
      li.append(h("button.small.secondary", { type: "button", "aria-label": `Cancel this ${(JOB_WORDS[j.type] || "job").toLowerCase()} job`, onclick: async (e) => {
        e.target.disabled = true;
        try { const c = await api("POST", `/jobs/${j.id}/cancel`); li.replaceWith(row(c)); announce(`Job ${c.status}`); } catch (err) { msg.show(err); e.target.disabled = false; }
      } }, "Cancel"));
    }
    return li;
  };
  const load = async (append) => {
    msg.clear();
    const qs = new URLSearchParams({ limit: "20" });
    if (status.value) qs.set("status", status.value);
    if (append && cursor) qs.set("cursor", cursor);
    try {
      const r = await api("GET", `/jobs?${qs}`);
      if (!append) clear(list);
      list.append(...r.items.map(row));
      if (!list.children.length) list.append(h("li.empty", "No jobs here yet: learning, applying and exporting show up here."));
      cursor = r.next_cursor; more.hidden = !cursor;
    } catch (e) { msg.show(e); }
  };
  status.addEventListener("change", () => load(false));
  more.addEventListener("click", () => load(true));
  page("My jobs", h("p", "Everything you asked PicFilter to do, newest first. Results stay downloadable here."),
    h("div.search", field("Show", status), h("button.secondary", { type: "button", onclick: () => load(false) }, "Refresh")), msg.el, list, more);
  load(false);
}

// ---- community -------------------------------------------------------------------------------
function communityView(params) {
  const msg = messageBox();
  const q = h("input", { type: "search", name: "q", value: params.get("q") || "", maxlength: 200 });
  const sort = h("select", { name: "sort" }, [["top_rated", "Top rated"], ["newest", "Newest"], ["most_used", "Most used"]]
    .map(([v, l]) => h("option", { value: v, selected: v === (params.get("sort") || "top_rated") }, l)));
  const list = h("ul.cards", { "aria-label": "Styles" });
  const tag = params.get("tag"); const owner = params.get("owner");
  const filter = tag || owner ? h("p.filter", `Showing ${tag ? `styles tagged “${tag}”` : ""}${tag && owner ? " " : ""}${owner ? `styles by ${owner}` : ""} · `,
    h("a", { href: "#/community" }, "show all styles")) : null;
  const more = h("button.secondary", { type: "button", hidden: true }, "Show more");
  let cursor = null;
  const load = async (append) => {
    msg.clear();
    const qs = new URLSearchParams({ sort: sort.value, limit: "24" });
    if (q.value.trim()) qs.set("q", q.value.trim());
    if (tag) qs.set("tag", tag);
    if (owner) qs.set("owner", owner);
    if (append && cursor) qs.set("cursor", cursor);
    try {
      const r = await api("GET", `/styles?${qs}`);
      const mine = currentSession() && currentSession().user;
      const items = r.items.filter((s) => s.visibility === "public" || (mine && s.owner.id === mine.id));
      if (!append) clear(list);
      list.append(...items.map(styleCard));
      if (!list.children.length) list.append(h("li.empty", "No styles match."));
      cursor = r.next_cursor; more.hidden = !cursor;
    } catch (e) { msg.show(e); }
  };
  const form = h("form.search", { role: "search" }, field("Search styles", q), field("Sort by", sort), h("button.primary", { type: "submit" }, "Search"));
  form.addEventListener("submit", (e) => { e.preventDefault(); load(false); });
  sort.addEventListener("change", () => load(false));
  more.addEventListener("click", () => load(true));
  page("Community styles", form, filter, msg.el, list, more);
  load(false);
}

// ---- router ----------------------------------------------------------------------------------
const ROUTES = [
  ["photos", photosView, "My photos"], ["teach", teachView, "Teach a style"], ["apply", applyView, "Apply"],
  ["styles", stylesView, "My styles"], ["community", communityView, "Community"], ["jobs", jobsView, "Jobs"], ["account", accountView, "Account"],
];

function drawNav() {
  const s = currentSession();
  const cur = (location.hash.slice(2).split(/[/?]/)[0]) || "";
  clear(nav, h("ul", ROUTES.map(([path, , label]) => h("li", h("a", { href: `#/${path}`, "aria-current": cur === path ? "page" : null },
    path === "account" && s && s.user ? `${s.user.username}` : label)))));
}

async function route() {
  const [path, query] = location.hash.slice(2).split("?");
  const params = new URLSearchParams(query || "");
  const [name, arg] = (path || "").split("/");
  drawNav();
  try {
    if (name === "style" && arg) return await styleView(arg);
    const r = ROUTES.find(([p]) => p === name);
    if (r) return await r[1](params);
    location.replace(currentSession() ? "#/photos" : "#/community");
  } catch (e) {
    page("Something went wrong", h("p.msg.error", { role: "alert" }, errorText(e)));
  }
}

let hadSession = !!currentSession();
onSession((s) => { drawNav(); if (hadSession && !s) route(); hadSession = !!s; });
window.addEventListener("hashchange", route);
route();
