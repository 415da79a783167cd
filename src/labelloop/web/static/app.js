// labelloop web: the labeling queue (keyboard first, prefetching) and small page helpers.
// No framework, no build. Data from the server is only ever put in the page with
// textContent / attributes, never parsed as HTML.
"use strict";

(() => {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  async function api(method, url, body) {
    const opts = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    if (method !== "GET") opts.headers["X-CSRF-Token"] = csrf;
    const r = await fetch(url, opts);
    let data = null;
    try { data = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) {
      const err = new Error((data && data.detail) || r.statusText || "request failed");
      err.status = r.status;
      err.kind = data && data.error;
      throw err;
    }
    return data;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const a = new Uint32Array(4);
    crypto.getRandomValues(a);
    return Array.from(a, (x) => x.toString(16).padStart(8, "0")).join("");
  }

  const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

  // ------------------------------------------------------------------ queue
  function initQueue() {
    const initial = JSON.parse(document.getElementById("initial").textContent);
    const view = document.getElementById("item-view");
    const meta = document.getElementById("item-meta");
    const guessEl = document.getElementById("guess");
    const classesEl = document.getElementById("classes");
    const progress = document.getElementById("progress");
    const toastEl = document.getElementById("toast");
    const S = {
      classes: initial.classes || [],
      buffer: [],          // prefetched items, next first
      current: null,
      done: new Set(),     // ids labeled or skipped here: never shown again unless undone
      images: new Map(),   // id -> preloaded, decoded <img>
      labeled: 0,
      remaining: initial.remaining,
      fetching: false,
      chain: Promise.resolve(),  // writes run one after another, in key order
    };

    let toastTimer = null;
    function toast(msg, bad) {
      toastEl.textContent = msg;
      toastEl.className = "toast show" + (bad ? " bad" : "");
      clearTimeout(toastTimer);
      toastTimer = setTimeout(() => { toastEl.className = "toast"; }, bad ? 6000 : 2000);
    }

    // the key of each class: classes named by single digits ("0".."9") sit on their own digit;
    // otherwise keys 1..9 pick the 1st..9th class and 0 the tenth
    function classKeys(classes) {
      if (classes.length && classes.every((c) => /^[0-9]$/.test(c))) return classes.slice();
      return classes.map((c, i) => (i < 10 ? String((i + 1) % 10) : ""));
    }

    function renderClasses() {
      classesEl.replaceChildren();
      S.keys = classKeys(S.classes);
      S.classes.forEach((c, i) => {
        const b = el("button", "cls");
        b.type = "button";
        b.dataset.label = c;
        const k = el("kbd", S.keys[i] ? "" : "none", S.keys[i]);
        b.append(k, el("span", "", c));
        b.addEventListener("click", () => submit(c));
        classesEl.append(b);
      });
      markGuess();
    }

    function markGuess() {
      const g = S.current && S.current.guess ? S.current.guess.label : null;
      for (const b of classesEl.querySelectorAll("button.cls")) b.classList.toggle("guessed", b.dataset.label === g);
    }

    function preload(item) {
      if (!item.media || S.images.has(item.id)) return;
      const im = new Image();
      im.alt = "item " + item.id;
      im.className = "item-img";
      im.decoding = "async";
      im.src = item.media;
      im.decode().then(() => {
        if (im.naturalWidth < 160 && im.naturalHeight < 160) im.classList.add("pixelated");
      }, () => {});
      S.images.set(item.id, im);
    }

    function updateProgress() {
      const left = typeof S.remaining === "number" ? ` · ${S.remaining.toLocaleString()} items without a label` : "";
      progress.textContent = `${S.labeled} labeled in this session${left}`;
    }

    function show(item) {
      S.current = item;
      view.replaceChildren();
      view.dataset.itemId = item ? String(item.id) : "";
      meta.textContent = "";
      guessEl.replaceChildren();
      if (!item) {
        view.append(el("p", "muted", "Nothing left to label right now. New items appear here as soon as there are some."));
        markGuess();
        updateProgress();
        return;
      }
      if (item.media) {
        preload(item);
        view.append(S.images.get(item.id));
      } else {
        view.append(el("div", "item-text", item.text));
      }
      // verify / random checks say so: the person's label certifies the machine's, so judge it afresh
      const check = item.kind === "verify" ? "Check · " : item.kind === "random" ? "Random sample · " : "";
      meta.textContent = `${check}${item.name} · ${item.reason || ""}`;
      view.dataset.kind = item.kind || "";
      if (item.guess) {
        guessEl.append(el("span", "muted", "Machine guess "), el("b", "", item.guess.label),
          el("span", "conf", ` ${(100 * item.guess.confidence).toFixed(0)}%`));
      } else {
        guessEl.append(el("span", "muted", item.assigned ? "Assigned to you: label it without a hint"
          : "No machine guess yet"));
      }
      markGuess();
      updateProgress();
    }

    function advance() {
      if (S.current) S.images.delete(S.current.id);
      show(S.buffer.shift() || null);
      if (S.buffer.length < 4) refill();
    }

    function take(items) {
      const have = new Set(S.buffer.map((i) => i.id));
      if (S.current) have.add(S.current.id);
      for (const it of items) {
        if (have.has(it.id) || S.done.has(it.id)) continue;
        S.buffer.push(it);
        have.add(it.id);
        preload(it);
      }
    }

    async function refill() {
      if (S.fetching) return;
      S.fetching = true;
      try {
        const ex = S.buffer.map((i) => i.id);
        if (S.current) ex.push(S.current.id);
        const out = await api("GET", `/api/queue?n=6&exclude=${ex.join(",")}`);
        S.remaining = out.remaining;
        if (JSON.stringify(out.classes) !== JSON.stringify(S.classes)) {
          S.classes = out.classes;
          renderClasses();
        }
        take(out.items);
        if (!S.current && S.buffer.length) advance();
        updateProgress();
      } catch (err) {
        if (err.status === 401) { location.href = "/login?next=/queue"; return; }
        toast("Could not load more items: " + err.message, true);
      } finally {
        S.fetching = false;
      }
      if (!S.current && !S.buffer.length) setTimeout(refill, 5000);
    }

    // every write is queued behind the previous one, so an undo never overtakes its label
    function enqueue(op) {
      S.chain = S.chain.then(op, op);
      return S.chain;
    }

    async function send(method, url, body) {
      for (let attempt = 0; ; attempt++) {
        try {
          return await api(method, url, body);
        } catch (err) {
          const retry = (err.status === undefined || err.status >= 500) && attempt < 5;
          if (!retry) throw err;
          await sleep(200 * 2 ** attempt);   // network trouble: same key, so stored once
        }
      }
    }

    function submit(label) {
      const item = S.current;
      if (!item) return;
      S.done.add(item.id);
      S.labeled++;
      advance();
      const key = newKey();
      enqueue(async () => {
        try {
          await send("POST", "/api/labels", { item: item.id, label, key });
        } catch (err) {
          S.labeled--;
          S.done.delete(item.id);
          toast(`Not saved (${item.name}): ${err.message}`, true);
          if (S.current) S.buffer.unshift(S.current);
          show(item);
        }
      });
    }

    function accept() {
      if (!S.current) return;
      if (!S.current.guess) { toast("No machine guess to accept: pick a class with 1–9 (0 is the tenth)."); return; }
      submit(S.current.guess.label);
    }

    function skip() {
      const item = S.current;
      if (!item) return;
      S.done.add(item.id);
      advance();
      enqueue(() => api("POST", "/api/skip", { item: item.id }).catch(() => {}));
    }

    function undo() {
      enqueue(async () => {
        try {
          const out = await send("POST", "/api/undo", { key: newKey() });
          const item = out.item_data;
          S.done.delete(item.id);
          S.labeled = Math.max(0, S.labeled - 1);
          if (S.current && S.current.id !== item.id) S.buffer.unshift(S.current);
          S.buffer = S.buffer.filter((i) => i.id !== item.id);
          show(item);
          toast(`Undone: ${item.name} was ${out.withdrawn}`);
        } catch (err) {
          toast(err.message, true);
        }
      });
    }

    document.addEventListener("keydown", (ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
      const t = ev.target;
      if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
      const k = ev.key;
      if (k >= "0" && k <= "9") {
        const c = S.classes[S.keys.indexOf(k)];   // classKeys: a digit class's own key, else by position
        if (c !== undefined) { ev.preventDefault(); submit(c); }
      } else if (k === "Enter") {
        ev.preventDefault(); accept();
      } else if (k === "s" || k === "S") {
        ev.preventDefault(); skip();
      } else if (k === "u" || k === "U") {
        ev.preventDefault(); undo();
      }
    });

    document.getElementById("new-class").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const input = document.getElementById("new-class-name");
      const name = input.value.trim();
      if (!name) return;
      try {
        const out = await api("POST", "/api/classes", { name });
        S.classes = out.classes;
        renderClasses();
        input.value = "";
        input.blur();
        toast(out.added.length ? `Added class ${name}` : `${name} already exists`);
      } catch (err) {
        toast(err.message, true);
      }
    });

    renderClasses();
    take(initial.items || []);
    advance();
  }

  // ------------------------------------------------------------------ review
  function initReview() {
    const all = document.getElementById("pick-all");
    if (all) {
      all.addEventListener("change", () => {
        for (const c of document.querySelectorAll("input.pick")) c.checked = all.checked;
      });
    }
    // changing a tile's class ticks it: a fix is meant to be saved
    for (const s of document.querySelectorAll(".tile select")) {
      s.addEventListener("change", () => {
        const box = s.closest(".tile").querySelector("input.pick");
        if (box) box.checked = true;
      });
    }
  }

  const page = document.body.dataset.page;
  if (page === "queue") initQueue();
  if (page === "review") initReview();
})();
