// In-browser preview of a style: its LUT (GET /styles/{id}/lut) applied to the screen image.
// Default ("canvas"): the graded image is computed once per photo and style in JS (trilinear,
// as the server does), then each slider move is one canvas 2D blend of the two images
// (out = before + s * (after - before), the server's strength formula) on a CPU-backed canvas.
// "webgl" (?renderer=webgl): the LUT is a 3D half-float texture and the GPU's trilinear filter
// does the lookup per move. Measured on the shared 2-core test machine (headless Chromium,
// no GPU, so WebGL is SwiftShader software): 1280x853, canvas 3 ms per move, WebGL ~400 ms;
// on a machine with a GPU both take a few ms. Hence canvas by default.

const lutCache = new Map();

export async function fetchLut(api, styleId) {
  if (lutCache.has(styleId)) return lutCache.get(styleId);
  const p = api("GET", `/styles/${styleId}/lut`).then(decodeLut);
  lutCache.set(styleId, p);
  p.catch(() => lutCache.delete(styleId));
  return p;
}

export function decodeLut(j) {
  const bin = atob(j.data);
  const n = bin.length >> 1;
  const out = new Float32Array(n);
  const span = (j.hi - j.lo) / 65535;
  for (let i = 0; i < n; i++) out[i] = j.lo + span * (bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8));
  return { size: j.size, dmin: j.domain_min, dmax: j.domain_max, table: out };
}

/** An image (ImageBitmap or <img>) scaled to at most maxW pixels wide, as a canvas. */
export function screenImage(src, maxW = 1280) {
  const w0 = src.width; const h0 = src.height;
  const scale = Math.min(1, maxW / w0);
  const c = document.createElement("canvas");
  c.width = Math.max(1, Math.round(w0 * scale)); c.height = Math.max(1, Math.round(h0 * scale));
  c.getContext("2d").drawImage(src, 0, 0, c.width, c.height);
  return c;
}

const VS = `#version 300 es
in vec2 p; out vec2 uv;
void main() { uv = vec2(p.x * 0.5 + 0.5, 0.5 - p.y * 0.5); gl_Position = vec4(p, 0.0, 1.0); }`;
const FS = `#version 300 es
precision highp float; precision highp sampler3D;
in vec2 uv; out vec4 o;
uniform sampler2D img; uniform sampler3D lut;
uniform float strength, split, n; uniform vec3 dmin, dmax;
void main() {
  vec4 c = texture(img, uv);
  vec3 d = clamp((c.rgb - dmin) / (dmax - dmin), 0.0, 1.0);
  vec3 g = texture(lut, d * ((n - 1.0) / n) + 0.5 / n).rgb;
  vec3 r = uv.x < split ? c.rgb : mix(c.rgb, g, strength);
  if (split > 0.0 && split < 1.0 && abs(uv.x - split) * float(textureSize(img, 0).x) < 1.0) r = vec3(1.0);
  o = vec4(clamp(r, 0.0, 1.0), 1.0);
}`;

class GLRenderer {
  constructor(canvas, gl) { this.canvas = canvas; this.gl = gl; this.kind = "WebGL2"; }
  init() {
    const gl = this.gl;
    const sh = (type, src) => {
      const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
      return s;
    };
    const prog = gl.createProgram();
    gl.attachShader(prog, sh(gl.VERTEX_SHADER, VS)); gl.attachShader(prog, sh(gl.FRAGMENT_SHADER, FS));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(prog));
    gl.useProgram(prog);
    this.prog = prog;
    const buf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    const loc = gl.getAttribLocation(prog, "p");
    gl.enableVertexAttribArray(loc); gl.vertexAttribPointer(loc, 2, gl.FLOAT, false, 0, 0);
    this.u = (name) => gl.getUniformLocation(prog, name);
    gl.uniform1i(this.u("img"), 0); gl.uniform1i(this.u("lut"), 1);
  }
  setImage(canvas) {
    const gl = this.gl;
    this.canvas.width = canvas.width; this.canvas.height = canvas.height;
    gl.viewport(0, 0, canvas.width, canvas.height);
    if (!this.imgTex) this.imgTex = gl.createTexture();
    gl.activeTexture(gl.TEXTURE0); gl.bindTexture(gl.TEXTURE_2D, this.imgTex);
    gl.pixelStorei(gl.UNPACK_COLORSPACE_CONVERSION_WEBGL, gl.NONE);
    gl.pixelStorei(gl.UNPACK_PREMULTIPLY_ALPHA_WEBGL, false);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, gl.RGBA, gl.UNSIGNED_BYTE, canvas);
    for (const [k, v] of [[gl.TEXTURE_MIN_FILTER, gl.NEAREST], [gl.TEXTURE_MAG_FILTER, gl.NEAREST],
      [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE]]) gl.texParameteri(gl.TEXTURE_2D, k, v);
  }
  setLut(lut) {
    const gl = this.gl; const n = lut.size;
    if (!this.lutTex) this.lutTex = gl.createTexture();
    gl.activeTexture(gl.TEXTURE1); gl.bindTexture(gl.TEXTURE_3D, this.lutTex);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    gl.texImage3D(gl.TEXTURE_3D, 0, gl.RGB16F, n, n, n, 0, gl.RGB, gl.FLOAT, lut.table);
    for (const [k, v] of [[gl.TEXTURE_MIN_FILTER, gl.LINEAR], [gl.TEXTURE_MAG_FILTER, gl.LINEAR],
      [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_R, gl.CLAMP_TO_EDGE]]) gl.texParameteri(gl.TEXTURE_3D, k, v);
    gl.uniform1f(this.u("n"), n);
    gl.uniform3fv(this.u("dmin"), lut.dmin); gl.uniform3fv(this.u("dmax"), lut.dmax);
  }
  draw(strength, split) {
    const gl = this.gl;
    gl.uniform1f(this.u("strength"), strength); gl.uniform1f(this.u("split"), split);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
    const px = new Uint8Array(4);
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px); // wait until the frame is done
  }
}

class CanvasRenderer {
  constructor(canvas) { this.canvas = canvas; this.ctx = canvas.getContext("2d", { willReadFrequently: true }); this.kind = "canvas 2D"; }
  init() {}
  setImage(canvas) { this.src = canvas; this.canvas.width = canvas.width; this.canvas.height = canvas.height; this.graded = null; this.regrade(); }
  setLut(lut) { this.lut = lut; this.regrade(); }
  regrade() {
    if (!this.src || !this.lut) return;
    const { width: w, height: hgt } = this.src;
    const data = this.src.getContext("2d").getImageData(0, 0, w, hgt);
    const px = data.data; const { size: n, table: t, dmin, dmax } = this.lut;
    const m = n - 1; const s1 = n * 3; const s2 = n * n * 3;
    for (let i = 0; i < px.length; i += 4) {
      const x = [0, 1, 2].map((c) => Math.min(1, Math.max(0, (px[i + c] / 255 - dmin[c]) / (dmax[c] - dmin[c]))) * m);
      const r0 = Math.min(m - 1, x[0] | 0); const g0 = Math.min(m - 1, x[1] | 0); const b0 = Math.min(m - 1, x[2] | 0);
      const fr = x[0] - r0; const fg = x[1] - g0; const fb = x[2] - b0;
      const base = b0 * s2 + g0 * s1 + r0 * 3;
      for (let c = 0; c < 3; c++) {
        const at = (dr, dg, db) => t[base + db * s2 + dg * s1 + dr * 3 + c];
        const c00 = at(0, 0, 0) + (at(1, 0, 0) - at(0, 0, 0)) * fr; const c10 = at(0, 1, 0) + (at(1, 1, 0) - at(0, 1, 0)) * fr;
        const c01 = at(0, 0, 1) + (at(1, 0, 1) - at(0, 0, 1)) * fr; const c11 = at(0, 1, 1) + (at(1, 1, 1) - at(0, 1, 1)) * fr;
        const c0 = c00 + (c10 - c00) * fg; const c1 = c01 + (c11 - c01) * fg;
        px[i + c] = Math.round(Math.min(1, Math.max(0, c0 + (c1 - c0) * fb)) * 255);
      }
    }
    const g = document.createElement("canvas"); g.width = w; g.height = hgt;
    g.getContext("2d").putImageData(data, 0, 0);
    this.graded = g;
  }
  draw(strength, split) {
    const { ctx, canvas: c } = this;
    if (!this.src) return;
    ctx.globalAlpha = 1; ctx.drawImage(this.src, 0, 0);
    if (this.graded) {
      const x0 = Math.round(split * c.width);
      ctx.globalAlpha = strength;
      ctx.drawImage(this.graded, x0, 0, c.width - x0, c.height, x0, 0, c.width - x0, c.height);
      ctx.globalAlpha = 1;
      if (split > 0 && split < 1) { ctx.fillStyle = "#fff"; ctx.fillRect(x0 - 1, 0, 2, c.height); }
    }
    ctx.getImageData(0, 0, 1, 1); // wait until the frame is done
  }
}

/** A preview on `canvas`: setImage(canvas), setLut(lut), draw(strength, split) -> ms. */
export function createPreview(canvas, { renderer = "canvas" } = {}) {
  let r = null;
  const gl = renderer === "webgl" && canvas.getContext("webgl2", { preserveDrawingBuffer: true, antialias: false });
  if (gl) {
    try { r = new GLRenderer(canvas, gl); r.init(); } catch (e) { console.warn("WebGL2 preview unavailable", e); r = null; }
  }
  if (!r) { r = new CanvasRenderer(canvas); r.init(); }
  const times = [];
  return {
    kind: r.kind,
    times,
    setImage: (c) => r.setImage(c),
    setLut: (l) => r.setLut(l),
    draw(strength, split = 0) {
      const t0 = performance.now();
      r.draw(strength, split);
      const ms = performance.now() - t0;
      times.push(ms);
      if (times.length > 200) times.shift();
      return ms;
    },
  };
}

export function median(a) {
  if (!a.length) return null;
  const s = [...a].sort((x, y) => x - y);
  return s[s.length >> 1];
}
