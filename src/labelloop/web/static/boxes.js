// labelloop web: the box editor of detection projects (/boxes). Boxes are kept in image
// pixels; the page scales them for display (zoom). Saving sends the image's final box list
// (POST /api/boxes/<item>); the server turns it into append-only edits. No framework, no build;
// server data only ever goes into the page as textContent / attributes. Uses app.js's helpers.
"use strict";

(() => {
  if (document.body.dataset.page !== "boxes") return;
  const { api, el, toast } = window.labelloop;   // from app.js
  const initial = JSON.parse(document.getElementById("initial").textContent);
  const scroll = document.getElementById("box-scroll");
  const canvas = document.getElementById("box-canvas");
  const meta = document.getElementById("item-meta");
  const list = document.getElementById("box-list");
  const count = document.getElementById("box-count");
  const classesEl = document.getElementById("classes");
  const progress = document.getElementById("progress");
  const MIN_PX = 3;          // screen pixels: a shorter drag is a click, not a box
  const ZOOM = 1.25;

  const S = {
    classes: initial.classes || [],
    buffer: [],              // prefetched images, next first
    done: new Set(),         // ids saved or skipped here
    item: null,              // the image shown
    boxes: [],               // {id, x, y, w, h, cls, source, score} in image pixels
    sel: -1,
    cls: (initial.classes || [])[0] || null,   // the class of the next box drawn
    scale: 1,
    remaining: initial.remaining,
    saved: 0,
    busy: false,
    drag: null,
  };

  // ---------------------------------------------------------------- drawing the page
  function fromServer(b) {
    return { id: b.id, x: b.x, y: b.y, w: b.w, h: b.h, cls: b.class, source: b.source, score: b.score };
  }

  function renderClasses() {
    classesEl.replaceChildren();
    S.classes.forEach((c, i) => {
      const b = el("button", "cls");
      b.type = "button";
      b.dataset.label = c;
      b.append(el("kbd", i < 9 ? "" : "none", i < 9 ? String(i + 1) : ""), el("span", "", c));
      b.classList.toggle("current", c === S.cls);
      b.addEventListener("click", () => setClass(c));
      classesEl.append(b);
    });
  }

  function render() {
    const it = S.item;
    if (!it) return;
    canvas.style.width = `${it.width * S.scale}px`;
    canvas.style.height = `${it.height * S.scale}px`;
    for (const old of canvas.querySelectorAll(".bx")) old.remove();
    list.replaceChildren();
    S.boxes.forEach((b, i) => {
      const d = el("div", "bx" + (b.source === "machine" ? " machine" : "") + (i === S.sel ? " sel" : ""));
      d.dataset.index = String(i);
      d.dataset.cls = b.cls;
      d.style.left = `${b.x * S.scale}px`;
      d.style.top = `${b.y * S.scale}px`;
      d.style.width = `${b.w * S.scale}px`;
      d.style.height = `${b.h * S.scale}px`;
      const score = b.source === "machine" && b.score !== null && b.score !== undefined ? ` ${b.score.toFixed(2)}` : "";
      d.append(el("span", "tag", b.cls + score));
      for (const h of ["nw", "ne", "sw", "se"]) {
        const hd = el("span", "hd " + h);
        hd.dataset.handle = h;
        d.append(hd);
      }
      canvas.append(d);
      const li = el("li", i === S.sel ? "sel" : "",
        `${b.cls}${score} · ${b.source === "machine" ? "pre-label" : b.id ? b.source : "new"} · ` +
        `${Math.round(b.x)},${Math.round(b.y)} ${Math.round(b.w)}×${Math.round(b.h)}`);
      li.addEventListener("click", () => select(i));
      list.append(li);
    });
    count.textContent = `${S.boxes.length} on this image`;
    for (const b of classesEl.querySelectorAll("button.cls")) b.classList.toggle("current", b.dataset.label === S.cls);
    progress.textContent = `${S.saved} images saved in this session · ${S.remaining} not yet reviewed`;
  }

  function fit() {
    const it = S.item;
    const w = scroll.clientWidth - 4, h = scroll.clientHeight - 4;
    S.scale = Math.max(0.05, Math.min(8, w / it.width, h / it.height));
  }

  function show(item) {
    S.item = item;
    S.sel = -1;
    S.drag = null;
    canvas.replaceChildren();
    canvas.dataset.itemId = item ? String(item.id) : "";
    if (!item) {
      S.boxes = [];
      list.replaceChildren();
      count.textContent = "";
      meta.textContent = "";
      canvas.style.width = canvas.style.height = "";
      canvas.append(el("p", "muted", "No image left to review. New images appear here when there are some."));
      progress.textContent = `${S.saved} images saved in this session`;
      return;
    }
    S.boxes = item.boxes.map(fromServer);
    const img = el("img");
    img.alt = "image " + item.id;
    img.src = item.media;
    img.draggable = false;
    canvas.append(img);
    const pre = S.boxes.filter((b) => b.source === "machine").length;
    meta.textContent = `${item.name} · ${item.width}×${item.height} px · ${item.reason || ""}` +
      (pre ? ` · ${pre} pre-label${pre === 1 ? "" : "s"}` : "");
    fit();
    render();
  }

  // ---------------------------------------------------------------- editing
  function select(i) {
    S.sel = S.boxes.length ? ((i % S.boxes.length) + S.boxes.length) % S.boxes.length : -1;
    render();
  }

  function setClass(c) {
    S.cls = c;
    const b = S.boxes[S.sel];
    if (b) b.cls = c;
    render();
  }

  function remove() {
    if (S.sel < 0) return;
    S.boxes.splice(S.sel, 1);
    S.sel = Math.min(S.sel, S.boxes.length - 1);
    render();
  }

  function zoom(f) {
    if (!S.item) return;
    S.scale = Math.max(0.05, Math.min(16, S.scale * f));
    render();
  }

  const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));
  const round = (v) => Math.round(v * 10) / 10;

  function point(ev) {
    const r = canvas.getBoundingClientRect();
    return { x: clamp((ev.clientX - r.left) / S.scale, 0, S.item.width),
             y: clamp((ev.clientY - r.top) / S.scale, 0, S.item.height) };
  }

  canvas.addEventListener("mousedown", (ev) => {
    if (ev.button !== 0 || !S.item) return;
    ev.preventDefault();
    canvas.focus();
    const p = point(ev);
    const boxEl = ev.target.closest(".bx");
    if (boxEl) {
      const i = Number(boxEl.dataset.index);
      S.sel = i;
      const b = S.boxes[i];
      S.drag = { mode: ev.target.dataset.handle || "move", start: p, orig: { ...b }, moved: false };
    } else {
      S.drag = { mode: "draw", start: p, moved: false };
    }
    render();
  });

  document.addEventListener("mousemove", (ev) => {
    const d = S.drag;
    if (!d) return;
    const p = point(ev);
    const W = S.item.width, H = S.item.height;
    if (!d.moved && Math.hypot(p.x - d.start.x, p.y - d.start.y) * S.scale < MIN_PX) return;
    d.moved = true;
    if (d.mode === "draw") {
      if (d.index === undefined) {
        S.boxes.push({ id: null, x: p.x, y: p.y, w: 0, h: 0, cls: S.cls, source: "human", score: null });
        d.index = S.sel = S.boxes.length - 1;
      }
      const b = S.boxes[d.index];
      b.x = Math.min(d.start.x, p.x); b.y = Math.min(d.start.y, p.y);
      b.w = Math.abs(p.x - d.start.x); b.h = Math.abs(p.y - d.start.y);
    } else if (d.mode === "move") {
      const b = S.boxes[S.sel], o = d.orig;
      b.x = clamp(o.x + p.x - d.start.x, 0, W - o.w);
      b.y = clamp(o.y + p.y - d.start.y, 0, H - o.h);
    } else {   // a corner: the opposite corner stays put
      const b = S.boxes[S.sel], o = d.orig;
      const fx = d.mode.includes("w") ? o.x + o.w : o.x, fy = d.mode.includes("n") ? o.y + o.h : o.y;
      b.x = Math.min(fx, p.x); b.y = Math.min(fy, p.y);
      b.w = Math.abs(p.x - fx); b.h = Math.abs(p.y - fy);
    }
    render();
  });

  document.addEventListener("mouseup", () => {
    const d = S.drag;
    if (!d) return;
    S.drag = null;
    if (!d.moved) { if (d.mode === "draw") { S.sel = -1; render(); } return; }
    const b = S.boxes[d.mode === "draw" ? d.index : S.sel];
    if (b && (b.w * S.scale < MIN_PX || b.h * S.scale < MIN_PX)) {   // too small to mean a box
      S.boxes.splice(S.boxes.indexOf(b), 1);
      S.sel = -1;
    } else if (b && d.mode !== "move") {
      b.x = round(b.x); b.y = round(b.y); b.w = round(b.w); b.h = round(b.h);
    }
    render();
  });

  // ---------------------------------------------------------------- images
  function advance() {
    if (S.item) S.done.add(S.item.id);
    show(S.buffer.shift() || null);
    if (S.buffer.length < 2) refill();
  }

  function take(items) {
    const have = new Set(S.buffer.map((i) => i.id));
    if (S.item) have.add(S.item.id);
    for (const it of items) {
      if (have.has(it.id) || S.done.has(it.id)) continue;
      S.buffer.push(it);
      have.add(it.id);
      new Image().src = it.media;   // preload
    }
  }

  async function refill() {
    if (S.fetching) return;
    S.fetching = true;
    try {
      const ex = [...S.buffer.map((i) => i.id), ...S.done];
      if (S.item) ex.push(S.item.id);
      const out = await api("GET", `/api/boxes?n=3&exclude=${ex.slice(-400).join(",")}`);
      S.remaining = out.remaining;
      if (JSON.stringify(out.classes) !== JSON.stringify(S.classes)) {
        S.classes = out.classes;
        renderClasses();
      }
      take(out.items);
      for (const pr of out.problems || []) toast(`Image ${pr.item} passed over: ${pr.detail}`, true);
      if (!S.item && S.buffer.length) advance();
      else render();
    } catch (err) {
      if (err.status === 401) { location.href = "/login?next=/boxes"; return; }
      toast("Could not load more images: " + err.message, true);
    } finally {
      S.fetching = false;
    }
  }

  async function save() {
    const it = S.item;
    if (!it || S.busy) return;
    S.busy = true;
    const boxes = S.boxes.map((b) => {
      const out = { x: b.x, y: b.y, w: b.w, h: b.h, class: b.cls };
      if (b.id) out.id = b.id;
      return out;
    });
    try {
      const out = await api("POST", `/api/boxes/${it.id}`, { boxes });
      S.saved++;
      S.remaining = Math.max(0, S.remaining - 1);
      const parts = [["accepted", out.accepted], ["edited", out.edited], ["added", out.added], ["deleted", out.deleted]]
        .filter(([, n]) => n).map(([w, n]) => `${n} ${w}`);
      toast(`Saved ${it.name}: ${parts.join(", ") || "no boxes"}`);
      advance();
    } catch (err) {
      if (err.status === 401) { location.href = "/login?next=/boxes"; return; }
      toast(`Not saved (${it.name}): ${err.message}`, true);
      if (err.status === 409) {   // changed meanwhile: show what it has now
        try { show(await api("GET", `/api/boxes/${it.id}`)); } catch (_) { /* keep the edit shown */ }
      }
    } finally {
      S.busy = false;
    }
  }

  function skip() {
    const it = S.item;
    if (!it || S.busy) return;
    advance();
    api("POST", `/api/boxes/${it.id}/skip`).catch(() => {});
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
    const k = ev.key;
    if (k >= "1" && k <= "9") {
      const c = S.classes[Number(k) - 1];
      if (c !== undefined) { ev.preventDefault(); setClass(c); }
    } else if (k === "Delete" || k === "Backspace") {
      ev.preventDefault(); remove();
    } else if (k === "Tab") {
      ev.preventDefault(); select(S.sel + (ev.shiftKey ? -1 : 1));
    } else if (k === "Escape") {
      S.sel = -1; render();
    } else if (k === "Enter") {
      ev.preventDefault(); save();
    } else if (k === "n" || k === "N" || k === "ArrowRight") {
      ev.preventDefault(); skip();
    } else if (k === "+" || k === "=") {
      ev.preventDefault(); zoom(ZOOM);
    } else if (k === "-" || k === "_") {
      ev.preventDefault(); zoom(1 / ZOOM);
    }
  });

  renderClasses();
  take(initial.items || []);
  advance();
})();
