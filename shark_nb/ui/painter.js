// shark_nb mask painter: the anywidget front end of shark_nb.MaskPainter.
//
// The mask lives in an offscreen canvas of the image's natural size (W x H): opaque = keep,
// transparent = repaint, exactly the PNG the API takes. A stroke is drawn segment by segment into
// that canvas and into the visible overlay (sized for the device pixel ratio), and nothing is sent
// while it is drawn; when it ends the mask goes to the kernel once, as PNG bytes (a binary buffer).
// Undo / redo replay the strokes (kept as vectors) from the last bitmap state.

const CLAMP = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

function canvas(w, h) {
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  return c;
}

function button(label, title, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.title = title;
  b.addEventListener("click", onClick);
  return b;
}

async function bitmapFrom(bytes, type) {
  return createImageBitmap(new Blob([bytes], { type }));
}

function render({ model, el }) {
  const W = model.get("width");
  const H = model.get("height");
  const maxBrush = Math.max(W, H);
  let color = model.get("color");
  let brush = model.get("brush_size");
  let erasing = false;

  // ----------------------------------------------------------------------------- the DOM
  const root = document.createElement("div");
  root.className = "shark-painter";
  root.tabIndex = 0;
  root.setAttribute("data-lm-suppress-shortcuts", "true"); // our keys, not JupyterLab's

  const bar = document.createElement("div");
  bar.className = "shark-painter-bar";
  const brushBtn = button("Brush", "Paint the area to repaint", () => setTool(false));
  const eraserBtn = button("Eraser", "Erase paint (keep that area)", () => setTool(true));
  const tools = document.createElement("span");
  tools.className = "shark-painter-tools";
  tools.append(brushBtn, eraserBtn);

  const sizeLabel = document.createElement("label");
  sizeLabel.className = "shark-painter-size";
  sizeLabel.title = "Brush size in the image's pixels ([ and ] change it)";
  const slider = document.createElement("input");
  slider.type = "range";
  slider.min = "1";
  slider.max = String(Math.max(2, Math.round(maxBrush / 4)));
  const sizeText = document.createElement("span");
  sizeLabel.append("Size", slider, sizeText);

  const undoBtn = button("Undo", "Undo the last stroke (Ctrl+Z)", () => undo());
  const redoBtn = button("Redo", "Redo (Ctrl+Shift+Z)", () => redo());
  const clearBtn = button("Clear", "Remove all paint", () => commit({ kind: "clear" }));
  const invertBtn = button("Invert", "Swap painted and kept", () => commit({ kind: "invert" }));
  const swatch = document.createElement("input");
  swatch.type = "color";
  swatch.title = "Overlay colour";
  swatch.value = /^#[0-9a-f]{6}$/i.test(color) ? color : "#ff2d6f";
  for (const b of [undoBtn, redoBtn, clearBtn, invertBtn]) b.classList.add("shark-painter-" + b.textContent.toLowerCase());
  brushBtn.classList.add("shark-painter-brush");
  eraserBtn.classList.add("shark-painter-eraser");
  const info = document.createElement("span");
  info.className = "shark-painter-info";
  info.textContent = `mask ${W}×${H} · [ ] size`;
  bar.append(tools, sizeLabel, undoBtn, redoBtn, clearBtn, invertBtn, swatch, info);

  const stage = document.createElement("div");
  stage.className = "shark-painter-stage";
  stage.style.aspectRatio = `${W} / ${H}`;
  // Fit to the width, never taller than most of the window (a tall image stays paintable
  // without scrolling), never wider than the image itself unless it is tiny.
  root.style.width = `min(100%, ${Math.max(W, 480)}px, calc(78vh * ${W / H}))`;
  const img = document.createElement("img");
  img.alt = "reference image";
  img.draggable = false;
  const imageUrl = URL.createObjectURL(new Blob([model.get("_image")], { type: model.get("_image_type") }));
  img.src = imageUrl;
  const overlay = canvas(1, 1);
  overlay.className = "shark-painter-overlay";
  overlay.style.opacity = String(model.get("opacity"));
  const ring = document.createElement("div");
  ring.className = "shark-painter-ring";
  stage.append(img, overlay, ring);
  root.append(bar, stage);
  el.append(root);

  // ---------------------------------------------------------------------- the mask, W x H
  const mask = canvas(W, H);
  const mctx = mask.getContext("2d");
  const octx = overlay.getContext("2d");
  mctx.fillStyle = "#000";
  mctx.fillRect(0, 0, W, H);
  let base = null;          // ImageBitmap of the state the ops start from (null = nothing painted)
  let ops = [];             // strokes and actions since `base`, oldest first
  let redoOps = [];
  let stroke = null;        // the stroke being drawn: {kind, points, size, erase}
  let sending = false;      // true while we set mask_png ourselves (ignore our own change event)

  function strokePath(ctx, points, scale) {
    ctx.beginPath();
    const [x0, y0] = points[0];
    if (points.length === 1) {
      ctx.arc(x0 * scale, y0 * scale, ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fill();
      return;
    }
    ctx.moveTo(x0 * scale, y0 * scale);
    for (let i = 1; i < points.length; i++) ctx.lineTo(points[i][0] * scale, points[i][1] * scale);
    ctx.stroke();
  }

  function pen(ctx, width, style, op) {
    ctx.globalCompositeOperation = op;
    ctx.lineWidth = width;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.strokeStyle = style;
    ctx.fillStyle = style;
  }

  // Draw points (image pixels; may lie outside the image: the canvas clips them exactly).
  function drawOnMask(points, size, erase) {
    pen(mctx, size, "#000", erase ? "source-over" : "destination-out");
    strokePath(mctx, points, 1);
  }

  function drawOnOverlay(points, size, erase) {
    const s = overlay.width / W;
    pen(octx, size * s, color, erase ? "destination-out" : "source-over");
    strokePath(octx, points, s);
  }

  // The overlay from the mask: colour where the mask is transparent.
  function renderOverlay() {
    octx.globalCompositeOperation = "copy";
    octx.fillStyle = color;
    octx.fillRect(0, 0, overlay.width, overlay.height);
    octx.globalCompositeOperation = "destination-out";
    octx.imageSmoothingEnabled = true;
    octx.drawImage(mask, 0, 0, overlay.width, overlay.height);
    octx.globalCompositeOperation = "source-over";
  }

  function apply(op) {
    if (op.kind === "stroke") {
      drawOnMask(op.points, op.size, op.erase);
    } else if (op.kind === "clear") {
      mctx.globalCompositeOperation = "copy";
      mctx.fillStyle = "#000";
      mctx.fillRect(0, 0, W, H);
    } else if (op.kind === "invert") {
      const scratch = canvas(W, H);
      const sctx = scratch.getContext("2d");
      sctx.fillStyle = "#000";
      sctx.fillRect(0, 0, W, H);
      sctx.globalCompositeOperation = "destination-out";
      sctx.drawImage(mask, 0, 0);
      mctx.globalCompositeOperation = "copy";
      mctx.drawImage(scratch, 0, 0);
    } else if (op.kind === "set") {
      mctx.globalCompositeOperation = "copy";
      mctx.drawImage(op.bitmap, 0, 0, W, H);
    }
    mctx.globalCompositeOperation = "source-over";
  }

  function replay() {
    apply(base ? { kind: "set", bitmap: base } : { kind: "clear" });
    for (const op of ops) apply(op);
    renderOverlay();
  }

  function refreshButtons() {
    undoBtn.disabled = ops.length === 0;
    redoBtn.disabled = redoOps.length === 0;
    brushBtn.classList.toggle("shark-painter-on", !erasing);
    eraserBtn.classList.toggle("shark-painter-on", erasing);
    root.classList.toggle("shark-painter-erasing", erasing);
  }

  // ------------------------------------------------------------------- mask to the kernel
  let encoding = false;
  let stale = false;
  async function send() {
    if (encoding) { stale = true; return; }
    encoding = true;
    try {
      do {
        stale = false;
        const blob = await new Promise((resolve) => mask.toBlob(resolve, "image/png"));
        if (stale || !blob) continue;          // changed while encoding: encode the newer state
        const buffer = await blob.arrayBuffer();
        if (stale) continue;
        sending = true;
        try { model.set("mask_png", new DataView(buffer)); } finally { sending = false; }
        model.save_changes();
      } while (stale);
    } finally {
      encoding = false;
    }
  }

  function commit(op) {
    if (op.kind !== "stroke") apply(op);       // a stroke is on the mask already
    ops.push(op);
    redoOps = [];
    if (op.kind !== "stroke") renderOverlay();
    refreshButtons();
    send();
  }

  function undo() {
    if (!ops.length || stroke) return;
    redoOps.push(ops.pop());
    replay();
    refreshButtons();
    send();
  }

  function redo() {
    if (!redoOps.length || stroke) return;
    const op = redoOps.pop();
    ops.push(op);
    apply(op);
    renderOverlay();
    refreshButtons();
    send();
  }

  // ---------------------------------------------------------------------- pointer input
  function toImage(e) {
    const r = overlay.getBoundingClientRect();
    return [(e.clientX - r.left) * (W / r.width), (e.clientY - r.top) * (H / r.height)];
  }

  function onDown(e) {
    if (stroke || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    root.focus({ preventScroll: true });
    overlay.setPointerCapture(e.pointerId);   // moves outside the canvas keep coming to us
    const eraser = erasing || e.button === 5 || (e.buttons & 32) !== 0;   // a pen's eraser end
    stroke = { kind: "stroke", points: [toImage(e)], size: brush, erase: eraser, id: e.pointerId };
    drawOnMask(stroke.points, stroke.size, stroke.erase);
    drawOnOverlay(stroke.points, stroke.size, stroke.erase);
  }

  function onMove(e) {
    moveRing(e);
    if (!stroke || e.pointerId !== stroke.id) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const ev of events.length ? events : [e]) {
      const p = toImage(ev);
      const last = stroke.points[stroke.points.length - 1];
      if (p[0] === last[0] && p[1] === last[1]) continue;
      stroke.points.push(p);
      const seg = [last, p];                  // incremental: only the new segment is drawn
      drawOnMask(seg, stroke.size, stroke.erase);
      drawOnOverlay(seg, stroke.size, stroke.erase);
    }
  }

  function onUp(e) {
    if (!stroke || e.pointerId !== stroke.id) return;
    const done = stroke;
    stroke = null;
    delete done.id;
    if (overlay.hasPointerCapture(e.pointerId)) overlay.releasePointerCapture(e.pointerId);
    commit(done);
  }

  function moveRing(e) {
    const r = stage.getBoundingClientRect();
    const d = brush * (r.width / W);
    ring.style.width = ring.style.height = `${d}px`;
    ring.style.transform = `translate(${e.clientX - r.left - d / 2}px, ${e.clientY - r.top - d / 2}px)`;
  }

  overlay.addEventListener("pointerdown", onDown);
  overlay.addEventListener("pointermove", onMove);
  overlay.addEventListener("pointerup", onUp);
  overlay.addEventListener("pointercancel", onUp);
  overlay.addEventListener("lostpointercapture", onUp);
  overlay.addEventListener("pointerenter", () => ring.classList.add("shark-painter-ring-on"));
  overlay.addEventListener("pointerleave", () => ring.classList.remove("shark-painter-ring-on"));
  overlay.addEventListener("contextmenu", (e) => e.preventDefault());

  // ------------------------------------------------------------------------ tools, keys
  function setTool(eraser) {
    erasing = eraser;
    refreshButtons();
  }

  function setBrush(size, save = true) {
    brush = Math.round(CLAMP(size, 1, maxBrush));
    slider.value = String(brush);
    sizeText.textContent = `${brush} px`;
    if (save && model.get("brush_size") !== brush) {
      model.set("brush_size", brush);
      model.save_changes();
    }
  }

  slider.addEventListener("input", () => setBrush(Number(slider.value), false));
  slider.addEventListener("change", () => setBrush(Number(slider.value)));
  swatch.addEventListener("input", () => { color = swatch.value; renderOverlay(); });
  swatch.addEventListener("change", () => { model.set("color", color); model.save_changes(); });

  root.addEventListener("keydown", (e) => {
    const mod = e.ctrlKey || e.metaKey;
    let handled = true;
    if (e.key === "[" && !mod) setBrush(brush / 1.25 < brush - 1 ? brush / 1.25 : brush - 1);
    else if (e.key === "]" && !mod) setBrush(brush * 1.25 > brush + 1 ? brush * 1.25 : brush + 1);
    else if (mod && e.key.toLowerCase() === "z") (e.shiftKey ? redo : undo)();
    else if (mod && e.key.toLowerCase() === "y") redo();
    else handled = false;
    if (handled) {
      e.preventDefault();
      e.stopPropagation();
    }
  });

  // ------------------------------------------------------------------- from the kernel
  async function onMaskFromKernel() {
    if (sending) return;
    const bytes = model.get("mask_png");
    if (!bytes || !bytes.byteLength) return;
    const bitmap = await bitmapFrom(bytes, "image/png");
    commitFromKernel({ kind: "set", bitmap });
  }

  function commitFromKernel(op) {
    apply(op);
    ops.push(op);
    redoOps = [];
    renderOverlay();
    refreshButtons();
  }

  const onBrush = () => setBrush(model.get("brush_size"), false);
  const onColor = () => { color = model.get("color"); swatch.value = color; renderOverlay(); };
  const onOpacity = () => { overlay.style.opacity = String(model.get("opacity")); };
  model.on("change:mask_png", onMaskFromKernel);
  model.on("change:brush_size", onBrush);
  model.on("change:color", onColor);
  model.on("change:opacity", onOpacity);

  // --------------------------------------------------------------- size: fit to width, DPR
  function fit() {
    const r = stage.getBoundingClientRect();
    if (!r.width) return;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(r.width * dpr));
    const h = Math.max(1, Math.round(r.height * dpr));
    if (overlay.width !== w || overlay.height !== h) {
      overlay.width = w;
      overlay.height = h;
      renderOverlay();
    }
  }
  const resize = new ResizeObserver(fit);
  resize.observe(stage);

  // The starting mask (a painter may have been painted from Python before it was shown).
  setBrush(brush, false);
  refreshButtons();
  (async () => {
    const bytes = model.get("mask_png");
    if (bytes && bytes.byteLength) {
      base = await bitmapFrom(bytes, "image/png");
      replay();
    }
    fit();
    root.dataset.ready = "true";
  })();

  return () => {
    resize.disconnect();
    model.off("change:mask_png", onMaskFromKernel);
    model.off("change:brush_size", onBrush);
    model.off("change:color", onColor);
    model.off("change:opacity", onOpacity);
    URL.revokeObjectURL(imageUrl);
  };
}

export default { render };
