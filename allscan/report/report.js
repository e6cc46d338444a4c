/* allscan report: filters and per-image lists, drawn from the inline JSON with DOM calls (never innerHTML),
   so no file name can become markup. Without this script the page's tables are still complete. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("data").textContent);
  var IM = D.images, NF = D.flags.length, ERR = 1 << (NF - 1), PAGE = 200;
  var first = [], last = [];
  IM.forEach(function (r, i) { if (first[r[0]] === undefined) first[r[0]] = i; last[r[0]] = i + 1; });
  var $ = function (id) { return document.getElementById(id); };
  var form = $("filters"), fClass = $("f-class"), fFlag = $("f-flag"), fSlide = $("f-slide");
  var tbodies = Array.prototype.slice.call(document.querySelectorAll("tbody.slide"));
  var reviewRows = Array.prototype.slice.call(document.querySelectorAll("table.review tbody tr[data-s]"));
  var state = { cls: "", flag: "", q: "" };
  document.documentElement.className += " js";
  form.hidden = false;

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function encPath(p) { return p.split("/").map(encodeURIComponent).join("/"); }
  function flagText(bits) {
    var out = [];
    for (var i = 0; i < NF; i++) if (bits & (1 << i)) out.push(D.flags[i]);
    return out.join(", ");
  }
  function matchFlags(f) {
    switch (state.flag) {
      case "": return true;
      case "any": return f !== 0;
      case "none": return f === 0;
      case "err": return (f & ERR) !== 0;
      default: return (f & (1 << +state.flag.slice(1))) !== 0;
    }
  }
  function matchImage(label, flags) {
    return (state.cls === "" || label === +state.cls) && matchFlags(flags);
  }
  function matchSlide(si) { return !state.q || D.slides[si].toLowerCase().indexOf(state.q) >= 0; }

  function thumb(r, bit, suffix, alt) {
    if (!(r[9] & bit)) return el("span", null, "nothumb");
    var img = el("img");
    img.loading = "lazy"; img.decoding = "async"; img.alt = alt; img.width = 72; img.height = 72;
    img.src = D.thumbs + "/" + r[8] + suffix;
    return img;
  }
  function bar(probs) {
    var b = el("span", null, "bar"), words = [];
    probs.forEach(function (p, i) {
      if (p === null) return;
      words.push(D.labels[i] + " " + (p / 100).toFixed(2));
      var seg = el("i"); seg.style.width = p + "%"; seg.style.background = D.colours[i]; b.appendChild(seg);
    });
    b.setAttribute("role", "img"); b.setAttribute("aria-label", words.join("; ")); b.title = words.join("; ");
    return b;
  }
  function imageRow(r) {
    var tr = el("tr"), td, a;
    td = el("td");
    if (r[10] >= 0) {
      var root = D.roots[r[10]];
      a = el("a"); a.href = /\/$/.test(root) ? root + encPath(r[1]) : root;
      a.appendChild(thumb(r, 1, D.suffix[0], "original " + r[1])); td.appendChild(a);
    } else td.appendChild(thumb(r, 1, D.suffix[0], ""));
    tr.appendChild(td);
    td = el("td");
    if (r[6]) {
      a = el("a"); a.href = encPath(r[6]);
      if (r[9] & 2) a.appendChild(thumb(r, 2, D.suffix[1], "heatmap " + r[1])); else a.textContent = "heatmap";
      td.appendChild(a);
    }
    tr.appendChild(td);
    var prefix = D.slides[r[0]] + "/";
    td = el("td", r[1].indexOf(prefix) === 0 ? r[1].slice(prefix.length) : r[1]);
    if (r[11]) { td.appendChild(el("br")); td.appendChild(el("span", r[11], "muted")); }
    tr.appendChild(td);
    td = el("td");
    if (r[2] >= 0) {
      var sw = el("span", null, "sw"); sw.style.background = D.colours[r[2]]; sw.setAttribute("aria-hidden", "true");
      td.appendChild(sw); td.appendChild(document.createTextNode(D.labels[r[2]]));
    } else td.appendChild(el("span", "not judged", "muted"));
    tr.appendChild(td);
    tr.appendChild(el("td", r[3] === null ? "" : r[3].toFixed(3), "num"));
    td = el("td"); if (r[4].length) td.appendChild(bar(r[4])); tr.appendChild(td);
    tr.appendChild(el("td", r[5] === null ? "" : r[5], "num"));
    tr.appendChild(el("td", flagText(r[7])));
    return tr;
  }
  function reviewRow(r) {
    var tr = el("tr"), td, t = thumb(r, 1, D.suffix[0], "");
    tr.setAttribute("data-s", r[0]); tr.setAttribute("data-l", r[2]); tr.setAttribute("data-f", r[7]);
    if (t.tagName === "IMG") { t.width = 48; t.height = 48; }
    td = el("td"); td.appendChild(t); tr.appendChild(td);
    tr.appendChild(el("td", D.slides[r[0]]));
    td = el("td");
    if (r[6]) { var a = el("a", r[1]); a.href = encPath(r[6]); td.appendChild(a); } else td.textContent = r[1];
    tr.appendChild(td);
    td = el("td");
    if (r[2] >= 0) td.textContent = D.labels[r[2]]; else td.appendChild(el("span", "not judged", "muted"));
    tr.appendChild(td);
    tr.appendChild(el("td", r[3] === null ? "" : r[3].toFixed(3), "num"));
    tr.appendChild(el("td", flagText(r[7]) + (r[11] ? ": " + r[11] : "")));
    return tr;
  }
  var reviewMore = $("review-more");
  if (reviewMore) {
    reviewMore.hidden = false;
    reviewMore.addEventListener("click", function () {
      var body = document.querySelector("table.review tbody"), frag = document.createDocumentFragment();
      D.review.forEach(function (i) { var tr = reviewRow(IM[i]); reviewRows.push(tr); frag.appendChild(tr); });
      body.appendChild(frag);
      reviewMore.remove();
      apply();
    });
  }
  function drawImages(tb) {
    var si = +tb.getAttribute("data-s"), cell = tb.querySelector("tr.imgs > td");
    var rows = [];
    for (var i = first[si]; i < last[si]; i++) if (matchImage(IM[i][2], IM[i][7])) rows.push(IM[i]);
    cell.textContent = "";
    var table = el("table", null, "images"), head = el("tr");
    ["Image", "Heatmap", "Name", "Label", "Confidence", "Probabilities", "Cells", "Flags"].forEach(function (h) {
      var th = el("th", h); th.scope = "col"; head.appendChild(th);
    });
    var thead = el("thead"); thead.appendChild(head); table.appendChild(thead);
    var body = el("tbody"); table.appendChild(body);
    var cap = el("caption", rows.length + " of " + (last[si] - first[si]) + " images match the filters");
    table.insertBefore(cap, thead);
    var shown = 0, more = el("button", "", "more");
    more.type = "button";
    function page() {
      var frag = document.createDocumentFragment(), stop = Math.min(rows.length, shown + PAGE);
      for (; shown < stop; shown++) frag.appendChild(imageRow(rows[shown]));
      body.appendChild(frag);
      more.hidden = shown >= rows.length;
      more.textContent = "Show " + Math.min(PAGE, rows.length - shown) + " more (" + (rows.length - shown) + " left)";
    }
    more.addEventListener("click", page);
    page();
    cell.appendChild(table); cell.appendChild(more);
  }
  function apply() {
    var counts = new Array(D.slides.length).fill(0), nImg = 0, nSlides = 0, nReview = 0;
    IM.forEach(function (r) { if (matchImage(r[2], r[7]) && matchSlide(r[0])) { counts[r[0]]++; nImg++; } });
    tbodies.forEach(function (tb) {
      var si = +tb.getAttribute("data-s"), show = counts[si] > 0;
      tb.hidden = !show;
      if (show) nSlides++;
      var det = tb.querySelector("details");
      if (show && det.open) drawImages(tb);
    });
    reviewRows.forEach(function (tr) {
      var show = matchSlide(+tr.getAttribute("data-s")) &&
        matchImage(+tr.getAttribute("data-l"), +tr.getAttribute("data-f"));
      tr.hidden = !show;
      if (show) nReview++;
    });
    $("slides-empty").hidden = nSlides > 0;
    $("review-empty").hidden = nReview > 0 || reviewRows.length === 0;
    $("f-status").textContent = "Showing " + nImg + " of " + IM.length + " images in " + nSlides + " of " +
      D.slides.length + " slides; " + nReview + " in the review queue.";
  }
  function read() {
    state.cls = fClass.value; state.flag = fFlag.value; state.q = fSlide.value.trim().toLowerCase();
    apply();
  }
  document.addEventListener("toggle", function (ev) {
    var det = ev.target;
    if (!det.matches || !det.matches("tbody.slide details")) return;
    var tb = det.closest("tbody.slide"), row = tb.querySelector("tr.imgs");
    row.hidden = !det.open;
    if (det.open) drawImages(tb); else row.firstElementChild.textContent = "";
  }, true);
  fClass.addEventListener("change", read);
  fFlag.addEventListener("change", read);
  fSlide.addEventListener("input", read);
  form.addEventListener("reset", function () { setTimeout(read, 0); });
  read();
})();
