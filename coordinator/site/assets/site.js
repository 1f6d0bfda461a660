// Draws every <div class="plot" data-figure="..."> with the bundled plotly.js.
document.querySelectorAll("div.plot[data-figure]").forEach(function (el) {
  var fig = JSON.parse(el.getAttribute("data-figure"));
  Plotly.newPlot(el, fig.data, fig.layout, {responsive: true, displaylogo: false});
});
