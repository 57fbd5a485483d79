// The report page's behaviour: pick the precomputed answer, sort, filter, unfold footnotes, show tooltips.
// Every answer was computed by `quantlab recommend`'s own code when the page was written; this script only
// chooses which one the controls point at (see quantlab/report/page/answer.py for the classes).
"use strict";
(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  function answerUi() {
    const source = $("#answers");
    if (!source) return;
    const data = JSON.parse(source.textContent);
    const rig = $("#rig"), point = $("#point"), floor = $("#floor"), range = $("#floor-range"), memory = $("#memory");
    Object.keys(data.rigs).forEach((name) => rig.add(new Option(name, name)));
    const entries = () => data.rigs[rig.value];
    function fillPoints() {
      point.innerHTML = "";
      entries().forEach((e, i) => point.add(new Option(e.label, String(i))));
    }
    function number(input, empty) {
      const v = parseFloat(input.value);
      return Number.isFinite(v) ? v : empty;
    }
    function show() {
      const e = entries()[Number(point.value)];
      const f = number(floor, 0);
      const limit = number(memory, null);
      const i = e.q.filter((q) => q < f).length; // recommend excludes quality_pct < min_quality
      const j = limit === null ? e.mems.length - 1 : e.m.filter((m) => m <= limit * 1e9).length; // and memory > limit
      const lines = data.texts[e.grid[i][j]].map((k) => data.lines[k]);
      const head = lines.find((l) => l.startsWith("Recommended on") || l.startsWith("No format on"));
      $("#headline").textContent = head || "";
      $("#verdict").className = head && head.startsWith("No format") ? "none" : "found";
      const reasons = $("#reasons");
      reasons.innerHTML = "";
      lines.filter((l) => l !== head && !l.startsWith("Excluded: ")).forEach((l) => {
        const li = document.createElement("li");
        li.textContent = l;
        if (l.startsWith("Caution:")) li.className = "caution";
        reasons.appendChild(li);
      });
      const excluded = lines.filter((l) => l.startsWith("Excluded: "));
      const list = $("#excluded ul");
      list.innerHTML = "";
      excluded.forEach((l) => {
        const li = document.createElement("li");
        li.textContent = l.slice("Excluded: ".length);
        list.appendChild(li);
      });
      $("#excluded summary").textContent = "Excluded (" + excluded.length + ")";
      $("#excluded").hidden = excluded.length === 0;
      const rep = e.floors[i], mem = e.mems[j];
      $("#equivalent").textContent = "As: quantlab recommend RESULTS --rig " + rig.value + " --basis " + e.basis +
        " --at " + e.at + " --min-quality " + rep + (mem === null ? "" : " --max-memory " + mem) +
        " (admits the same formats as a floor of " + f + "%" + (limit === null ? "" : " and " + limit + " GB") + ").";
    }
    rig.addEventListener("change", () => { fillPoints(); show(); });
    point.addEventListener("change", show);
    floor.addEventListener("input", () => { range.value = floor.value; show(); });
    range.addEventListener("input", () => { floor.value = range.value; show(); });
    memory.addEventListener("input", show);
    fillPoints();
    show();
  }

  function key(cell) {
    if (cell.dataset.k !== undefined) return [0, Number(cell.dataset.k)];
    const t = cell.textContent.trim();
    return t === "" || t === "–" ? [2, ""] : [1, t.toLowerCase()];
  }

  function compare(a, b) {
    if (a[0] !== b[0]) return a[0] - b[0];
    return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
  }

  function sortBy(th) {
    const table = th.closest("table");
    const col = Array.from(th.parentNode.children).indexOf(th);
    const up = th.getAttribute("aria-sort") !== "ascending";
    $$("th", table).forEach((h) => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    const groups = $$(":scope > tbody", table).map((body, i) => [body, key(body.rows[0].cells[col]), i]);
    groups.sort((a, b) => {
      const missing = (a[1][0] === 2) - (b[1][0] === 2); // a missing figure stays last either way
      const c = missing || (up ? 1 : -1) * compare(a[1], b[1]);
      return c || a[2] - b[2];
    });
    groups.forEach((g) => table.appendChild(g[0]));
  }

  function toggle(row) {
    const notes = row.nextElementSibling;
    const button = $("button.fn", row);
    notes.hidden = !notes.hidden;
    button.setAttribute("aria-expanded", String(!notes.hidden));
    button.textContent = (notes.hidden ? "▸" : "▾") + button.textContent.slice(1);
  }

  function tablesUi() {
    $$("th button.sort").forEach((b) => b.addEventListener("click", () => sortBy(b.parentNode)));
    $$("tr.row").forEach((row) => row.addEventListener("click", () => toggle(row)));
    $$("input[data-table]").forEach((input) => input.addEventListener("input", () => {
      const q = input.value.trim().toLowerCase();
      $$(":scope > tbody", document.getElementById(input.dataset.table)).forEach((body) => {
        body.hidden = q !== "" && !body.rows[0].textContent.toLowerCase().includes(q);
      });
    }));
  }

  function tipsUi() {
    const tip = $("#tip");
    function place(target, x, y) {
      tip.textContent = target.dataset.tip;
      tip.hidden = false;
      const w = tip.offsetWidth;
      tip.style.left = Math.max(4, Math.min(x + 12, window.innerWidth - w - 4)) + "px";
      tip.style.top = (y + 14) + "px";
    }
    $$(".pt").forEach((pt) => {
      pt.addEventListener("pointermove", (ev) => place(pt, ev.clientX, ev.clientY));
      pt.addEventListener("focus", () => {
        const r = pt.getBoundingClientRect();
        place(pt, r.left, r.bottom);
      });
      pt.addEventListener("pointerleave", () => { tip.hidden = true; });
      pt.addEventListener("blur", () => { tip.hidden = true; });
    });
  }

  answerUi();
  tablesUi();
  tipsUi();
})();
