// The page: the model list, the form, streaming a generation, the piano roll.
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
