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

  const typing = (t) => t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT");

  let toastTimer = null;
  function toast(msg, bad) {
    const toastEl = document.getElementById("toast");
    if (!toastEl) return;
    toastEl.textContent = msg;
    toastEl.classList.add("show");
    toastEl.classList.toggle("bad", !!bad);
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toastEl.classList.remove("show"); }, bad ? 6000 : 2000);
  }

  // ------------------------------------------------------------------ class picker
  // A list of class buttons with a type-to-filter box, for any number of classes: typing
  // narrows the list (names containing the text, those starting with it first), the arrow
  // keys move the highlight, Enter picks the highlighted (first) match, Esc clears.
  function classPicker(input, list, onPick, onEscape) {
    let classes = [], keys = [], matches = [], at = 0;

    function render(newClasses, newKeys) {
      classes = newClasses.slice();
      keys = newKeys || classes.map(() => "");
      list.replaceChildren();
      classes.forEach((c, i) => {
        const b = el("button", "cls");
        b.type = "button";
        b.dataset.label = c;
        b.append(el("kbd", keys[i] ? "" : "none", keys[i]), el("span", "", c));
        b.addEventListener("click", () => onPick(c));
        list.append(b);
      });
      filter();
    }

    function filter() {
      const q = input.value.trim().toLowerCase();
      const starts = [], contains = [];
      classes.forEach((c) => {
        const n = c.toLowerCase();
        if (!q || n.startsWith(q)) starts.push(c);
        else if (n.includes(q)) contains.push(c);
      });
      matches = starts.concat(contains);
      at = 0;
      const shown = new Set(matches);
      for (const b of list.querySelectorAll("button.cls")) b.hidden = !shown.has(b.dataset.label);
      highlight();
    }

    function highlight() {
      const active = input.value.trim() ? matches[at] : undefined;
      for (const b of list.querySelectorAll("button.cls")) {
        const on = b.dataset.label === active;
        b.classList.toggle("match", on);
        if (on) b.scrollIntoView({ block: "nearest" });
      }
    }

    function clear() {
      input.value = "";
      filter();
    }

    input.addEventListener("input", filter);
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        if (matches.length) at = (at + (ev.key === "ArrowDown" ? 1 : matches.length - 1)) % matches.length;
        highlight();
      } else if (ev.key === "Enter") {
        ev.preventDefault();
        if (!input.value.trim()) { onPick(null); return; }
        const c = matches[at];
        if (c === undefined) { toast(`No class matches “${input.value.trim()}”`, true); return; }
        clear();
        onPick(c);
      } else if (ev.key === "Escape") {
        ev.preventDefault();
        clear();
        onEscape();
      }
    });
    return { render, clear, get classes() { return classes; } };
  }

  // ------------------------------------------------------------------ queue
  function initQueue() {
    const initial = JSON.parse(document.getElementById("initial").textContent);
    const view = document.getElementById("item-view");
    const meta = document.getElementById("item-meta");
    const guessEl = document.getElementById("guess");
    const classesEl = document.getElementById("classes");
    const progress = document.getElementById("progress");
    const filterEl = document.getElementById("class-filter");
    const guidelines = document.getElementById("guidelines");
    const S = {
      classes: initial.classes || [],
      buffer: [],          // prefetched items, next first
      current: null,
      done: new Set(),     // ids labeled or skipped here: never shown again unless undone
      images: new Map(),   // id -> preloaded, decoded <img>
      labeled: 0,
      remaining: initial.remaining,
      fetching: false,
      // the newest label whose refreshed predictions the page waits for, and the newest the
      // served predictions include (GET /api/queue?after=&wait=: the server answers once they do)
      wantApplied: 0,
      applied: (initial.snapshot || {}).applied_annotation_id || 0,
      waiting: false,
      chain: Promise.resolve(),  // writes run one after another, in key order
      on: new Set(),       // multi-label: the classes toggled on for the item shown
      suggested: new Set(),
    };
    // multi-label projects: keys toggle classes, Enter submits the set (none on: none applies)
    const multi = initial.task === "multilabel";

    // the key of each class: classes named by single digits ("0".."9") sit on their own digit;
    // otherwise keys 1..9 pick the 1st..9th class and 0 the tenth
    function classKeys(classes) {
      if (classes.length && classes.every((c) => /^[0-9]$/.test(c))) return classes.slice();
      return classes.map((c, i) => (i < 10 ? String((i + 1) % 10) : ""));
    }

    // the filter box: Enter on a match labels with it (on an empty box: accepts the guess);
    // after a pick or Esc the keys are shortcuts again
    const picker = classPicker(filterEl, classesEl, (c) => {
      filterEl.blur();
      if (c === null) { if (multi) submitSet(); else accept(); } else if (multi) toggle(c); else submit(c);
    }, () => filterEl.blur());

    function renderClasses() {
      S.keys = classKeys(S.classes);
      picker.render(S.classes, S.keys);
      markGuess();
    }

    function markGuess() {
      const g = S.current && S.current.guess ? S.current.guess.label : null;
      for (const b of classesEl.querySelectorAll("button.cls")) {
        b.classList.toggle("guessed", b.dataset.label === g);
        if (!multi) continue;
        b.classList.toggle("on", S.on.has(b.dataset.label));
        b.classList.toggle("suggested", S.suggested.has(b.dataset.label));
        b.setAttribute("aria-pressed", String(S.on.has(b.dataset.label)));
      }
    }

    function toggle(c) {
      if (!S.current) return;
      if (S.on.has(c)) S.on.delete(c); else S.on.add(c);
      markGuess();
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
      const open = multi ? "items with a class nobody decided" : "items without a label";
      const left = typeof S.remaining === "number" ? ` · ${S.remaining.toLocaleString()} ${open}` : "";
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
      if (multi) {
        const scores = item.scores || {};
        S.suggested = new Set(S.classes.filter((c) => scores[c] >= initial.suggest_at));
        S.on = new Set(S.suggested);
        if (!Object.keys(scores).length) guessEl.append(el("span", "muted", "No machine suggestion yet: toggle the classes that apply"));
        else guessEl.append(el("span", "muted", "Machine suggests "),
          el("b", "", S.suggested.size ? [...S.suggested].join(", ") : "none applies"));
      } else if (item.guess) {
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
        served(out);
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

    function served(out) {   // what every queue answer tells besides its items
      S.remaining = out.remaining;
      if (JSON.stringify(out.classes) !== JSON.stringify(S.classes)) {
        S.classes = out.classes;
        renderClasses();
      }
      const applied = out.snapshot ? out.snapshot.applied_annotation_id : 0;
      if (applied > S.applied) {
        S.applied = applied;
        document.body.dataset.applied = String(applied);
      }
    }

    // after a label: one request waits until predictions refreshed with it are served (the
    // server answers the moment they are, no polling); then the prefetched items are replaced
    // by the queue those predictions order, with their refreshed guesses. A label posted while
    // it waits is waited for next; an answer without it (the refresh took longer than WAIT s,
    // or refreshing is off) ends the wait until the next label.
    const WAIT = 30;
    async function awaitRefresh(annotation) {
      S.wantApplied = Math.max(S.wantApplied, annotation);
      if (S.waiting) return;
      S.waiting = true;
      try {
        while (S.applied < S.wantApplied) {
          const after = S.wantApplied;
          const ex = S.current ? [S.current.id] : [];
          const out = await api("GET", `/api/queue?n=6&exclude=${ex.join(",")}&after=${after}&wait=${WAIT}`);
          served(out);
          if (S.applied >= after) replaceBuffer(out.items);   // (ordered by predictions with that label)
          if (S.applied < after) break;
        }
      } catch (err) {
        if (err.status === 401) { location.href = "/login?next=/queue"; return; }
        // the prefetched items still serve; the next label waits again
      } finally {
        S.waiting = false;
      }
    }

    function replaceBuffer(items) {
      const keep = S.current ? S.current.id : null;
      const before = S.buffer.map((i) => i.id);
      S.buffer = [];
      take(items);
      const held = new Set(S.buffer.map((i) => i.id));
      // what was prefetched and is no longer shown goes back to the others at once
      const dropped = before.filter((id) => id !== keep && !held.has(id));
      if (dropped.length) api("POST", "/api/release", { items: dropped }).catch(() => {});
      for (const id of [...S.images.keys()]) if (id !== keep && !held.has(id)) S.images.delete(id);
      if (!S.current && S.buffer.length) advance();
      else if (S.buffer.length < 4) refill();
      updateProgress();
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
      submitTo("/api/labels", { label, key: newKey() });
    }

    function submitSet() {   // multi-label: the classes toggled on, in class order
      submitTo("/api/decisions", { classes: S.classes.filter((c) => S.on.has(c)) });
    }

    function submitTo(url, fields) {
      const item = S.current;
      if (!item) return;
      S.done.add(item.id);
      S.labeled++;
      advance();
      enqueue(async () => {
        try {
          const out = await send("POST", url, { item: item.id, ...fields });
          if (out && out.annotation) awaitRefresh(out.annotation);   // (not awaited: the next write goes on)
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
      if (!S.current.guess) { toast("No machine guess to accept: pick a class with 1–9 (0 is the tenth) or find it with /."); return; }
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
          // multi-label undo is not idempotent (no key): sent once, never retried
          const out = multi ? await api("POST", "/api/undo", {}) : await send("POST", "/api/undo", { key: newKey() });
          const item = out.item_data;
          S.done.delete(item.id);
          S.labeled = Math.max(0, S.labeled - 1);
          if (S.current && S.current.id !== item.id) S.buffer.unshift(S.current);
          S.buffer = S.buffer.filter((i) => i.id !== item.id);
          show(item);
          toast(multi ? `Undone: ${item.name}` : `Undone: ${item.name} was ${out.withdrawn}`);
        } catch (err) {
          toast(err.message, true);
        }
      });
    }

    document.addEventListener("keydown", (ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target)) return;
      const k = ev.key;
      if (k === "/") {
        ev.preventDefault(); filterEl.focus();
      } else if ((k === "g" || k === "G") && guidelines) {
        ev.preventDefault(); guidelines.open = !guidelines.open;
      } else if (k >= "0" && k <= "9") {
        const c = S.classes[S.keys.indexOf(k)];   // classKeys: a digit class's own key, else by position
        if (c !== undefined) { ev.preventDefault(); if (multi) toggle(c); else submit(c); }
      } else if (k === "Enter") {
        ev.preventDefault(); if (multi) submitSet(); else accept();
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
  // Keys: j / k move between tiles, a accepts the tile's label, x fixes it through the class
  // picker, shift-A accepts every tile shown. Each decision is saved at once (POST /api/review).
  function reviewKeys() {
    const data = JSON.parse(document.getElementById("review-data").textContent);
    const tiles = Array.from(document.querySelectorAll(".tile"));
    const box = document.getElementById("picker");
    const filterEl = document.getElementById("picker-filter");
    let at = -1, fixing = null;

    // a tile is settled once saved, and busy while its save is on the way: neither is decided twice
    const closed = (t) => t.classList.contains("done") || t.classList.contains("busy");
    const open = () => tiles.filter((t) => !closed(t));
    const itemOf = (t) => Number(t.querySelector("input.pick").value);

    function focusTile(i) {
      if (!tiles.length) return;
      at = Math.max(0, Math.min(tiles.length - 1, i));
      tiles.forEach((t, j) => t.classList.toggle("current", j === at));
      tiles[at].scrollIntoView({ block: "nearest" });
    }

    function nextOpen() {
      const rest = tiles.slice(at + 1).concat(tiles.slice(0, at)).filter((t) => !closed(t));
      if (rest.length) focusTile(tiles.indexOf(rest[0]));
    }

    function settle(t, label, how) {
      t.classList.add("done");
      const pick = t.querySelector("input.pick");
      pick.checked = false;
      pick.disabled = true;   // the bulk form no longer sends it
      t.querySelector("select").disabled = true;
      t.querySelector(".tile-label").textContent = `${how} ${label}`;
    }

    async function decide(list, how) {
      const decisions = list.map((t) => ({ item: itemOf(t), label: t.querySelector("select").value }));
      list.forEach((t) => t.classList.add("busy"));
      try {
        const out = await api("POST", "/api/review", { items: decisions, key: newKey() });
        list.forEach((t, j) => settle(t, decisions[j].label, how));
        return out.appended;
      } catch (err) {
        toast(`Not saved: ${err.message}`, true);
        return null;
      } finally {
        list.forEach((t) => t.classList.remove("busy"));
      }
    }

    async function acceptCurrent() {
      const t = tiles[at];
      if (!t || closed(t)) return;
      if (await decide([t], "✓") !== null) { toast(`Accepted: ${t.querySelector("select").value}`); nextOpen(); }
    }

    async function acceptAll() {
      const list = open();
      if (!list.length) { toast("Nothing left to accept on this page."); return; }
      const n = await decide(list, "✓");
      if (n !== null) location.href = `/review?${data.back}${data.back ? "&" : ""}done=${n}`;
    }

    function startFix() {
      const t = tiles[at];
      if (!t || closed(t)) return;
      fixing = t;
      document.getElementById("picker-title").textContent =
        `Fix item ${itemOf(t)} (now ${t.querySelector("select").value}): type to find a class`;
      box.hidden = false;
      picker.clear();
      filterEl.focus();
    }

    function closeFix() {
      filterEl.blur();   // the keys are shortcuts again
      box.hidden = true;
      fixing = null;
    }

    const picker = classPicker(filterEl, document.getElementById("picker-classes"), async (c) => {
      const t = fixing;
      closeFix();
      if (!t || c === null) return;
      t.querySelector("select").value = c;
      if (await decide([t], "✎") !== null) { toast(`Fixed: ${c}`); nextOpen(); }
    }, closeFix);
    picker.render(data.classes);

    tiles.forEach((t, i) => t.addEventListener("focusin", () => { if (at !== i) focusTile(i); }));
    document.addEventListener("keydown", (ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target) || !box.hidden) return;
      const k = ev.key;
      if (k === "j" || k === "k") {
        ev.preventDefault();
        focusTile(at < 0 ? 0 : at + (k === "j" ? 1 : -1));
      } else if (k === "a") {
        ev.preventDefault(); if (at < 0) focusTile(0); acceptCurrent();
      } else if (k === "A") {
        ev.preventDefault(); acceptAll();
      } else if (k === "x" || k === "X") {
        ev.preventDefault(); if (at < 0) focusTile(0); startFix();
      }
    });
    if (tiles.length) focusTile(0);
  }

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
    reviewKeys();
  }

  // what the other page scripts share (boxes.js); app.js runs first (deferred, in order)
  window.labelloop = { api, el, toast };

  const page = document.body.dataset.page;
  if (page === "queue") initQueue();
  if (page === "review") initReview();
})();
