// The compare page. The whole query is in the URL (?axis=&baseline=&candidate=), so a pasted
// link opens the same view. data/compare/axes.js calls hwmatrixAxes() with every axis and its
// values (and, in a static site with a long axis, the pairs it holds); the grid is
// data/compare/<axis>/<baseline>-<candidate>.js (positions in that list),
// loaded as a <script> because file:// refuses fetch(). Record text is set as text, never HTML.
(function () {
  var COLOURS = {"slower": "#c0392b", "unknown": "#f1c40f", "same": "#95a5a6", "faster": "#27ae60",
                 "not compared": "#9b59b6", "same binary": "#d5d8dc"};
  var ORDER = Object.keys(COLOURS);
  var MAX_ROWS = 2000;
  var query = new URLSearchParams(location.search);
  var wanted = {axis: query.get("axis"), baseline: query.get("baseline"), candidate: query.get("candidate")};
  var axes = [];

  function $(id) { return document.getElementById(id); }
  function say(text) { $("state").textContent = text; }
  function plotText(s) {       // plotly reads a few tags in labels: record text goes in as entities
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
  function fill(select, values, chosen) {
    select.textContent = "";
    values.forEach(function (v) {
      var o = document.createElement("option");
      o.value = v; o.textContent = v; o.selected = (v === chosen);
      select.appendChild(o);
    });
  }
  function named(name) { return axes.filter(function (a) { return a.name === name; })[0]; }
  function fillValues(axis, base, cand) {
    fill($("baseline"), axis.values, axis.values.indexOf(base) >= 0 ? base : axis.values[0]);
    fill($("candidate"), axis.values, axis.values.indexOf(cand) >= 0 ? cand : axis.values[1]);
  }
  function pct(r) { return (r - 1) * 100; }
  function ratioText(row) {
    if (row.ratio === null) return "-";
    var s = row.ratio.toFixed(3);
    return row.ci_low === null ? s : s + " [" + row.ci_low.toFixed(3) + ", " + row.ci_high.toFixed(3) + "]";
  }

  window.hwmatrixAxes = function (listing) {
    axes = listing.axes;
    if (!axes.length) { say("No axis has two values in this store: nothing to compare."); return; }
    var axis = named(wanted.axis) || axes[0];
    fill($("axis"), axes.map(function (a) { return a.name; }), axis.name);
    fillValues(axis, wanted.baseline, wanted.candidate);
    $("axis").addEventListener("change", function () { fillValues(named(this.value)); });
    $("permalink").textContent = location.href;
    $("permalink").href = location.href;
    if (!wanted.axis) { say("Choose an axis, a baseline and a candidate."); return; }
    var b = axis.values.indexOf(wanted.baseline), c = axis.values.indexOf(wanted.candidate);
    if (axis.name !== wanted.axis || b < 0 || c < 0) {
      say("This store has no " + wanted.axis + "=" + (b < 0 ? wanted.baseline : wanted.candidate) +
          ": choose from the lists."); return;
    }
    if (b === c) { say("Baseline and candidate are the same value: choose two."); return; }
    var held = !axis.pairs || axis.pairs.some(function (p) { return p[0] === b && p[1] === c; });
    if (!held) {
      say("This pair is not in this static site: it holds every pair of an axis with up to 12 values, " +
          "else each value against its neighbours and the first. `hwmatrix serve` computes any pair."); return;
    }
    var s = document.createElement("script");
    s.src = "data/compare/" + axes.indexOf(axis) + "/" + b + "-" + c + ".js";
    s.onerror = function () { say("The comparison could not be loaded from " + s.src + "."); };
    document.body.appendChild(s);
  };

  window.hwmatrixCompare = function (data) {
    if (data.axis !== wanted.axis || data.baseline !== wanted.baseline || data.candidate !== wanted.candidate) {
      say("The store changed since this page was loaded: reload it."); return;
    }
    var counts = {};
    data.rows.forEach(function (r) { counts[r.verdict] = (counts[r.verdict] || 0) + 1; });
    say(data.axis + ": " + data.baseline + " \u2192 " + data.candidate + ": " + data.classes.length +
        " hardware class(es) \u00d7 " + data.cells.length + " cell(s); " +
        (data.rows.length ? ORDER.filter(function (v) { return counts[v]; })
          .map(function (v) { return counts[v] + " " + v; }).join(", ")
          : "no class measured both (nothing to compare)") + ".");
    document.body.setAttribute("data-query", JSON.stringify(wanted));
    $("legend").textContent = "";
    ORDER.forEach(function (v) {
      var key = document.createElement("span");
      key.className = "key"; key.style.background = COLOURS[v]; key.textContent = v;
      $("legend").appendChild(key);
    });
    data.metrics.forEach(function (metric) { heatmap(data, metric); });
    table(data);
  };

  function heatmap(data, metric) {
    var cls = data.classes.map(function (c) { return c.id; });
    var z = cls.map(function () { return data.cells.map(function () { return null; }); });
    var text = cls.map(function () { return data.cells.map(function () { return ""; }); });
    var hover = cls.map(function () { return data.cells.map(function () { return ""; }); });
    data.rows.forEach(function (r) {
      if (r.metric !== metric) return;
      var i = cls.indexOf(r["class"]), j = data.cells.indexOf(r.cell);
      z[i][j] = ORDER.indexOf(r.verdict);
      text[i][j] = r.ratio === null ? "-" : r.ratio.toFixed(3);
      hover[i][j] = plotText(data.classes[i].name) + "<br>" + plotText(r.cell) + "<br>" + metric + " ratio " +
        ratioText(r) + (r.ratio === null ? "" : " (" + (pct(r.ratio) >= 0 ? "+" : "") + pct(r.ratio).toFixed(1) + "%)") +
        "<br>" + r.verdict + (r.p_adjusted === null ? "" : ", p adj " + r.p_adjusted) +
        "<br>n " + r.n_base + " / " + r.n_cand + "; runs " + plotText(r.runs.join(" / ")) +
        r.warnings.map(function (w) { return "<br>" + plotText(data.notes[w]); }).join("");
    });
    var scale = [];
    ORDER.forEach(function (v, k) {
      scale.push([k / ORDER.length, COLOURS[v]], [(k + 1) / ORDER.length, COLOURS[v]]);
    });
    var longest = Math.max.apply(null, data.cells.map(function (c) { return c.length; }));
    var bottom = Math.min(400, 30 + 4 * longest);        // the cells' labels, slanted 40 degrees
    var el = document.createElement("div");
    el.className = "plot"; el.id = "heatmap-" + metric;
    $("plots").appendChild(el);
    Plotly.newPlot(el, [{type: "heatmap", z: z, x: data.cells.map(plotText),
      y: data.classes.map(function (c) { return plotText(c.name + (c.imported ? " (imported)" : "")); }),
      text: text, texttemplate: "%{text}", customdata: hover, hovertemplate: "%{customdata}<extra></extra>",
      colorscale: scale, zmin: -0.5, zmax: ORDER.length - 0.5, showscale: false, xgap: 1, ygap: 1}],
      {title: {text: metric + ": " + plotText(data.candidate) + " / " + plotText(data.baseline) + " on " + plotText(data.axis)},
       height: 30 * cls.length + 140 + bottom, margin: {l: 40, r: 20, t: 50, b: bottom},
       xaxis: {type: "category", tickangle: -40, automargin: true},
       yaxis: {type: "category", automargin: true, autorange: "reversed"}},
      {responsive: true, displaylogo: false});
  }

  function table(data) {
    var names = {};
    data.classes.forEach(function (c) { names[c.id] = c.name + (c.imported ? " (imported)" : ""); });
    var rows = data.rows.slice().sort(function (a, b) {
      return ORDER.indexOf(a.verdict) - ORDER.indexOf(b.verdict) || (a.ratio || 0) - (b.ratio || 0);
    });
    var body = $("rows").tBodies[0];
    body.textContent = "";
    rows.slice(0, MAX_ROWS).forEach(function (r) {
      var tr = body.insertRow();
      [names[r["class"]], r.cell, r.metric, ratioText(r), r.verdict,
       r.p_adjusted === null ? "-" : r.p_adjusted.toPrecision(2), r.n_base + " / " + r.n_cand, r.runs.join(" / "),
       r.warnings.map(function (w) { return data.notes[w]; }).join("; ")].forEach(function (v) {
        tr.insertCell().textContent = v;
      });
      tr.cells[4].className = r.verdict.replace(" ", "-");
    });
    $("rows").hidden = false;
    if (rows.length > MAX_ROWS) {
      $("rows-cut").hidden = false;
      $("rows-cut").textContent = "The table shows the first " + MAX_ROWS + " of " + rows.length + " rows; the heatmaps show all.";
    }
  }
})();
