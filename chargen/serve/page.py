"""The page ``chargen serve`` answers at ``/``: one self-contained HTML file, no external assets.

It streams a generation with fetch + ReadableStream (reading the SSE by hand,
since EventSource cannot POST), and for music models draws a piano roll of the
result on a canvas and offers the .mid for download. The panels below the
output (player, history, training curves: :mod:`chargen.serve.panels`) are
spliced in where the template marks them.
"""

from chargen.serve import panels

#: Nothing but the page's own inline code and this server: no third-party assets can load.
PAGE_CSP = ("default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
            "img-src 'self' data: blob:; connect-src 'self' blob:")

_TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>chargen</title>
<style>
  :root { font-family: system-ui, sans-serif; color: #1d232b; background: #f6f7f9; }
  main { max-width: 960px; margin: 1.5rem auto; padding: 0 1rem; }
  h1 { font-size: 1.4rem; margin: 0 0 1rem; }
  form { display: grid; grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); gap: .6rem 1rem;
         background: #fff; border: 1px solid #dde1e6; border-radius: 8px; padding: 1rem; }
  label { display: flex; flex-direction: column; font-size: .8rem; color: #56606b; gap: .2rem; }
  label.wide { grid-column: 1 / -1; }
  input, select, textarea, button { font: inherit; font-size: .95rem; padding: .35rem .45rem;
         border: 1px solid #c4cad1; border-radius: 5px; background: #fff; color: inherit; }
  textarea { resize: vertical; font-family: ui-monospace, monospace; }
  .buttons { display: flex; gap: .5rem; align-items: end; }
  button { cursor: pointer; background: #1f6feb; color: #fff; border-color: #1f6feb; }
  button[disabled] { opacity: .5; cursor: default; }
  button.secondary { background: #fff; color: #1d232b; border-color: #c4cad1; }
  #status { margin: .8rem 0; font-size: .85rem; color: #56606b; min-height: 1.2em; }
  #status.error { color: #b42318; }
  #output { background: #fff; border: 1px solid #dde1e6; border-radius: 8px; padding: 1rem; min-height: 6rem;
            white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, monospace; margin: 0; }
  #primeout { color: #8a939d; }
  #roll { display: block; width: 100%; background: #10151c; border-radius: 8px; margin-top: .8rem; }
  #download { display: inline-block; margin-top: .6rem; }
  [hidden] { display: none !important; }
/*panels:css*/
</style>
</head>
<body>
<main>
  <h1>chargen</h1>
  <form id="form">
    <label>Model <select id="model" required></select></label>
    <label id="label-box" hidden>Label <select id="label"></select></label>
    <label>Decoder
      <select id="decoder">
        <option value="sample">sample</option><option value="greedy">greedy</option>
        <option value="beam">beam search</option>
      </select>
    </label>
    <label>Length <input id="length" type="number" min="0" value="300"></label>
    <label id="temperature-box">Temperature <input id="temperature" type="number" min="0.01" step="any"
      value="0.8"></label>
    <label id="beam-box" hidden>Beam width <input id="beam" type="number" min="2" value="4"></label>
    <label>Seed <input id="seed" type="number" min="0" placeholder="random"></label>
    <label>API token <input id="token" type="password" autocomplete="off" placeholder="if the server needs one">
    </label>
    <label class="wide">Prime <textarea id="prime" rows="3" placeholder="text to continue"></textarea></label>
    <div class="buttons">
      <button id="generate" type="submit">Generate</button>
      <button id="stop" type="button" class="secondary" disabled>Stop</button>
    </div>
  </form>
  <div id="status"></div>
  <pre id="output"><span id="primeout"></span><span id="gen"></span></pre>
  <canvas id="roll" width="1200" height="300" hidden></canvas>
  <a id="download" hidden>Download .mid</a>
<!--panels:html-->
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let models = [];
let controller = null;
let midiUrl = null;

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const token = $("token").value.trim();
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (e) {
    return response.statusText;
  }
}

function currentModel() {
  return models.find((m) => m.name === $("model").value);
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) {
    setStatus("cannot list models: " + response.status + " " + (await errorText(response)), true);
    return;
  }
  models = (await response.json()).models;
  $("model").replaceChildren(...models.map((m) => {
    const option = document.createElement("option");
    option.value = m.name;
    const loss = m.best_val_loss == null ? "" : ", val " + m.best_val_loss.toFixed(3);
    option.textContent = m.name + " (" + m.codec + loss + ")";
    return option;
  }));
  setStatus(models.length + " model(s) served");
  modelsLoaded();
  syncLabels();
}

function syncLabels() {  // a labelled model's labels; "" asks for none
  const labels = (currentModel() || {}).labels || [];
  $("label").replaceChildren(...["", ...labels].map((name) => {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name || "(none)";
    return option;
  }));
  $("label-box").hidden = labels.length === 0;
}

function syncDecoder() {
  const beam = $("decoder").value === "beam";
  $("beam-box").hidden = !beam;
  $("temperature-box").hidden = $("decoder").value !== "sample";
}

function requestBody() {
  const model = currentModel();
  const body = { model: model.name, length: Number($("length").value), stream: true,
                 format: model.music ? "midi" : "text" };
  const prime = $("prime").value;
  if (prime) body.prime = prime;
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  if ($("label").value !== "") body.label = $("label").value;
  const decoder = $("decoder").value;
  if (decoder === "sample") body.temperature = Number($("temperature").value);
  if (decoder === "greedy") body.greedy = true;
  if (decoder === "beam") body.beam_width = Number($("beam").value);
  return Object.assign(body, takeRerunExtras());
}

function rollSpan(notes) {  // seconds the roll's width stands for
  return Math.max(...notes.map((n) => n[2]), 0.1);
}

function drawRoll(notes, playhead = null) {
  const canvas = $("roll");
  const ctx = canvas.getContext("2d");
  canvas.hidden = false;
  ctx.fillStyle = "#10151c";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!notes.length) {
    ctx.fillStyle = "#8a939d";
    ctx.font = "16px sans-serif";
    ctx.fillText("no notes in this output", 16, 28);
    return;
  }
  const low = Math.min(...notes.map((n) => n[0])) - 2;
  const high = Math.max(...notes.map((n) => n[0])) + 2;
  const end = rollSpan(notes);
  const rowH = canvas.height / (high - low + 1);
  for (let p = low; p <= high; p++) {  // black keys as darker rows
    if ([1, 3, 6, 8, 10].includes(((p % 12) + 12) % 12)) {
      ctx.fillStyle = "#0b0f14";
      ctx.fillRect(0, canvas.height - (p - low + 1) * rowH, canvas.width, rowH);
    }
  }
  for (const [pitch, start, stop, velocity] of notes) {
    const x = (start / end) * canvas.width;
    const w = Math.max(2, ((stop - start) / end) * canvas.width);
    const y = canvas.height - (pitch - low + 1) * rowH;
    const sounding = playhead !== null && start <= playhead && playhead < stop;
    ctx.fillStyle = sounding ? "#fff6d5"
      : "hsla(" + (200 - velocity) + ", 80%, 60%, " + (0.45 + velocity / 254) + ")";
    ctx.fillRect(x, y, w, Math.max(1, rowH - 1));
  }
  if (playhead !== null) {
    const x = Math.min(playhead / end, 1) * canvas.width;
    ctx.fillStyle = "rgba(255, 200, 40, 0.12)";  // the part already played
    ctx.fillRect(0, 0, x, canvas.height);
    ctx.fillStyle = "#ffc828";
    ctx.fillRect(x - 1.5, 0, 3, canvas.height);
  }
}

function showMidi(sample) {
  if (midiUrl) URL.revokeObjectURL(midiUrl);
  const bytes = Uint8Array.from(atob(sample.midi_base64), (c) => c.charCodeAt(0));
  midiUrl = URL.createObjectURL(new Blob([bytes], { type: "audio/midi" }));
  const link = $("download");
  link.href = midiUrl;
  link.download = "chargen.mid";
  link.hidden = false;
  drawRoll(sample.notes || []);
  loadPlayer(sample.notes || []);
}

function onEvent(name, data) {
  if (name === "start") {
    setStatus("generating with " + data.decoder + ", seed " + data.seed + " ...");
  } else if (name === "token") {
    if (data.index === 0) $("gen").textContent += data.text;
  } else if (name === "done") {
    const first = data.samples[0] || { text: "", logprob: 0, nats_per_token: 0 };
    $("gen").textContent = first.text;  // beam search sends its result only at the end
    const rate = data.duration_s > 0 ? Math.round(data.tokens / data.duration_s) : 0;
    let line = "done: " + data.tokens + " tokens in " + data.duration_s.toFixed(2) + " s (" + rate +
      "/s), log-prob " + first.logprob.toFixed(2) + " (" + first.nats_per_token.toFixed(3) +
      " nats/token), seed " + data.seed;
    if (data.history_id) line += ", history id " + data.history_id;
    setStatus(line);
    if (data.history_id) loadHistory();
    if (data.format === "midi" && first.midi_base64) showMidi(first);
  } else if (name === "error") {
    setStatus("error " + data.status + ": " + data.detail, true);
  }
}

function dispatch(raw) {
  let name = "message";
  let data = "";
  for (const line of raw.split(/\r?\n/)) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
  }
  if (data) onEvent(name, JSON.parse(data));
}

async function generate(event) {
  event.preventDefault();
  if (!currentModel()) { setStatus("no model selected", true); return; }
  controller = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  $("primeout").textContent = $("prime").value;
  $("gen").textContent = "";
  $("roll").hidden = true;
  $("download").hidden = true;
  loadPlayer([]);
  showOpened(null);
  setStatus("starting ...");
  try {
    const response = await fetch("/v1/generate", { method: "POST", headers: headers(),
      body: JSON.stringify(requestBody()), signal: controller.signal });
    if (!response.ok) {
      setStatus("error " + response.status + ": " + (await errorText(response)), true);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const raw = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        dispatch(raw);
      }
    }
  } catch (e) {
    setStatus(e.name === "AbortError" ? "stopped" : "error: " + e.message, e.name !== "AbortError");
  } finally {
    $("generate").disabled = false;
    $("stop").disabled = true;
    controller = null;
  }
}

$("form").addEventListener("submit", generate);
$("stop").addEventListener("click", () => controller && controller.abort());
$("decoder").addEventListener("change", syncDecoder);
$("model").addEventListener("change", () => {
  const model = currentModel();
  $("prime").placeholder = model && model.music ? "MIDI tokens (printable form)" : "text to continue";
  syncLabels();
});
$("token").value = sessionStorage.getItem("chargen-token") || "";
$("token").addEventListener("change", () => {
  sessionStorage.setItem("chargen-token", $("token").value);
  loadModels();
});
//panels:script
syncDecoder();
loadModels();
</script>
</body>
</html>
"""

PAGE = panels.splice(_TEMPLATE)
