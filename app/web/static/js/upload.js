// The presigned upload flow with a progress bar per file, and pairing of dropped files by name.
import { api, errorFrom } from "./api.js";
import { h, bytes, errorText } from "./ui.js";

export const MAX_BYTES = 50 * 1024 * 1024;
const TYPES = { jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", webp: "image/webp",
  heic: "image/heic", heif: "image/heif", tif: "image/tiff", tiff: "image/tiff" };
export const ACCEPT = Object.keys(TYPES).map((e) => "." + e).join(",") + "," + [...new Set(Object.values(TYPES))].join(",");

export function typeOf(file) {
  const ext = (file.name.split(".").pop() || "").toLowerCase();
  if (Object.values(TYPES).includes(file.type)) return file.type;
  return TYPES[ext] || null;
}

/** Why a file is refused before any request, in words; null when it may go. */
export function refuseReason(file) {
  if (!typeOf(file)) return `${file.name}: not a photo PicFilter reads (JPEG, PNG, WebP, HEIC/HEIF or TIFF).`;
  if (file.size > MAX_BYTES) return `${file.name}: ${bytes(file.size)} is over the 50 MB limit.`;
  if (file.size === 0) return `${file.name}: the file is empty.`;
  return null;
}

function put(url, file, headers, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    for (const [k, v] of Object.entries(headers || {})) {
      if (!["content-length", "host"].includes(k.toLowerCase())) xhr.setRequestHeader(k, v);
    }
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve();
      else errorFrom(new Response(xhr.responseText, { status: xhr.status, headers: { "content-type": xhr.getResponseHeader("content-type") || "" } })).then(reject);
    };
    xhr.onerror = () => reject(Object.assign(new Error("The upload was interrupted (network)."), { status: 0 }));
    xhr.send(file);
  });
}

/** One row with a progress bar; resolves to the confirmed image or null (refused, explained). */
export async function uploadOne(file, list, opts = {}) {
  const bar = h("progress", { max: 100, value: 0, "aria-label": `Upload progress of ${file.name}` });
  const state = h("span.state", "waiting");
  const row = h("li.upload", h("span.name", file.name), bar, state);
  list.append(row);
  const refused = refuseReason(file);
  if (refused) { state.textContent = "refused: " + refused; row.classList.add("bad"); bar.remove(); return null; }
  try {
    state.textContent = "starting";
    const up = await api("POST", "/images/upload", { filename: file.name, content_type: typeOf(file), size: file.size, store_exif: !!opts.storeExif });
    state.textContent = "uploading";
    await put(up.upload_url, file, up.headers, (f) => { bar.value = Math.round(f * 95); });
    state.textContent = "checking";
    const img = await api("POST", `/images/${up.image_id}/confirm`);
    bar.value = 100; state.textContent = "done"; row.classList.add("ok");
    return img;
  } catch (e) {
    row.classList.add("bad"); bar.remove();
    state.textContent = "refused: " + errorText(e);
    return null;
  }
}

/** Upload files two at a time; returns [{file, image|null}]. */
export async function uploadMany(files, list, opts = {}) {
  const out = new Array(files.length);
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      const i = next++;
      out[i] = { file: files[i], image: await uploadOne(files[i], list, opts) };
    }
  };
  await Promise.all([worker(), worker()]);
  return out;
}

const EDIT = /^(.*?)[-_ .]?(edit|edited|after|retouched|final|out)$/i;
const stem = (name) => name.replace(/\.[^.]+$/, "");

/** Pair names such as x.jpg / x-edit.jpg (also _edit, -after, -edited, -retouched, -final).
 *  Returns {pairs: [[before, after]], rest: [...]} of the items given (anything with .name). */
export function pairByName(items) {
  const byStem = new Map(items.map((it) => [stem(it.name).toLowerCase(), it]));
  const used = new Set(); const pairs = [];
  for (const it of items) {
    const m = stem(it.name).match(EDIT);
    if (!m || !m[1]) continue;
    const before = byStem.get(m[1].toLowerCase());
    if (before && before !== it && !used.has(before) && !used.has(it)) {
      pairs.push([before, it]); used.add(before); used.add(it);
    }
  }
  return { pairs, rest: items.filter((it) => !used.has(it)) };
}

/** A drop zone with a file picker; calls onFiles(File[]). Keyboard: the button opens the picker. */
export function dropZone(label, onFiles) {
  const input = h("input", { type: "file", multiple: true, accept: ACCEPT, class: "visually-hidden", tabindex: -1, "aria-hidden": "true" });
  input.addEventListener("change", () => { if (input.files.length) onFiles([...input.files]); input.value = ""; });
  const button = h("button.secondary", { type: "button", onclick: () => input.click() }, "Choose files…");
  const zone = h("div.drop", h("p", label), button, input);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault(); zone.classList.remove("over");
    const files = [...(e.dataTransfer.files || [])];
    if (files.length) onFiles(files);
  });
  zone.input = input;
  return zone;
}
