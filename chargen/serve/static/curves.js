// --- curves: validation (and training) loss against steps for each served model ---
// The SVG namespace, from the HTML parser: the page spells out no URL at all (no external assets).
const SVG_NS = (() => {
  const template = document.createElement("template");
  template.innerHTML = "<svg></svg>";
  return template.content.firstChild.namespaceURI;
})();

function svgElement(name, attributes, text) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

function curveChart(points) {
  const W = 320, H = 150, left = 40, right = 8, top = 8, bottom = 22;
  const svg = svgElement("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
  const losses = points.flatMap((p) => [p.train_loss, p.val_loss]).filter((v) => v !== null);
  const steps = points.map((p) => p.step);
  const [x0, x1] = [Math.min(...steps), Math.max(...steps, Math.min(...steps) + 1)];
  let [y0, y1] = [Math.min(...losses), Math.max(...losses)];
  if (y1 - y0 < 1e-6) { y0 -= 0.5; y1 += 0.5; }
  const x = (step) => left + ((step - x0) / (x1 - x0)) * (W - left - right);
  const y = (loss) => top + ((y1 - loss) / (y1 - y0)) * (H - top - bottom);
  svg.append(svgElement("line", { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, stroke: "#c4cad1" }),
             svgElement("line", { x1: left, y1: top, x2: left, y2: H - bottom, stroke: "#c4cad1" }));
  const label = (lx, ly, text, anchor) => svg.append(svgElement("text", { x: lx, y: ly, "font-size": 10,
    fill: "#56606b", "text-anchor": anchor }, text));
  label(left - 4, top + 8, y1.toFixed(2), "end");
  label(left - 4, H - bottom, y0.toFixed(2), "end");
  label(left, H - 6, "step " + x0, "start");
  label(W - right, H - 6, String(x1), "end");
  svg.append(svgElement("text", { x: W - right, y: top + 8, "font-size": 10, fill: "#e8590c",
                                  "text-anchor": "end" }, "validation"),
             svgElement("text", { x: W - right, y: top + 20, "font-size": 10, fill: "#7f99bd",
                                  "text-anchor": "end" }, "training"));
  for (const [key, colour, width] of [["train_loss", "#9fb4d0", 1], ["val_loss", "#e8590c", 2]]) {
    const line = points.filter((p) => p[key] !== null).map((p) => x(p.step).toFixed(1) + "," + y(p[key]).toFixed(1));
    if (line.length) svg.append(svgElement("polyline", { class: key, points: line.join(" "), fill: "none",
                                                         stroke: colour, "stroke-width": width }));
  }
  return svg;
}

async function loadCurves() {
  const cards = await Promise.all(models.map(async (model) => {
    const card = document.createElement("div");
    card.className = "curve";
    card.dataset.model = model.name;
    const title = document.createElement("h3");
    title.textContent = model.name;
    const note = document.createElement("p");
    card.append(title);
    const response = await fetch("/v1/models/" + encodeURIComponent(model.name) + "/curve", { headers: headers() });
    if (!response.ok) {
      note.textContent = "cannot read the curve: " + (await errorText(response));
    } else {
      const curve = await response.json();
      if (curve.points.some((p) => p.val_loss !== null || p.train_loss !== null)) card.append(curveChart(curve.points));
      if (curve.trend) {
        note.className = "verdict-" + curve.trend.verdict;
        note.textContent = curve.trend.summary;
      } else if (!curve.points.length) {
        note.textContent = "no training curve recorded for this model (no metrics.jsonl in its run folder)";
      } else {
        note.textContent = "training loss only: no validation loss recorded yet";
      }
    }
    card.append(note);
    return card;
  }));
  $("curve-list").replaceChildren(...cards);
}
