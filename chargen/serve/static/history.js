// --- history: past generations, opened where a fresh one appears, re-run with its settings ---
let opened = null;       // the record on show
let rerunExtras = null;  // its settings the form has no field for, sent with the re-run only
let historySearch = 0;
let historyTimer = null;

function takeRerunExtras() {
  const extras = rerunExtras || {};
  rerunExtras = null;
  return extras;
}

function historyModels() {
  const select = $("history-model");
  const chosen = select.value;
  select.replaceChildren(select.options[0], ...models.map((m) => {
    const option = document.createElement("option");
    option.value = m.name;
    option.textContent = m.name;
    return option;
  }));
  select.value = models.some((m) => m.name === chosen) ? chosen : "";
}

function isMusic(record) {
  return Boolean(record.midi_url);  // the server marks music records
}

function describe(record) {
  const p = record.params || {};
  const parts = [record.model || "model no longer served", record.decoder];
  if (record.decoder === "sample") parts.push("temperature " + p.temperature);
  if (record.decoder === "beam") parts.push("beam " + p.beam_width);
  parts.push("length " + p.length, "seed " + record.seed);
  return parts.join(" \u00b7 ");
}

async function loadHistory() {
  const search = ++historySearch;  // answers to older searches are dropped
  const params = new URLSearchParams({ limit: "30" });
  if ($("history-q").value.trim()) params.set("q", $("history-q").value.trim());
  if ($("history-model").value) params.set("model", $("history-model").value);
  const response = await fetch("/v1/generations?" + params, { headers: headers() });
  if (search !== historySearch) return;
  if (!response.ok) {
    $("history-list").replaceChildren();
    $("history-note").textContent = response.status === 404 ? "no history on this server: "
      + (await errorText(response)) : "cannot list generations: " + (await errorText(response));
    return;
  }
  const records = (await response.json()).generations;
  $("history-note").textContent = records.length ? "" : "no generations found";
  $("history-list").replaceChildren(...records.map((record) => {
    const item = document.createElement("button");
    item.type = "button";
    item.className = "history-item" + (opened && opened.id === record.id ? " open" : "");
    item.dataset.id = record.id;
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = new Date(record.created_at).toLocaleString();
    const what = document.createElement("span");
    what.textContent = describe(record);
    const snippet = document.createElement("span");
    snippet.className = "snippet";
    const first = (record.outputs || [])[0] || { text: "" };
    snippet.textContent = isMusic(record) ? "\u266b " + first.text.length + " events" : first.text.slice(0, 200);
    item.append(when, what, snippet);
    item.addEventListener("click", () => openGeneration(record.id));
    const li = document.createElement("li");
    li.append(item);
    return li;
  }));
}

function showOpened(record) {
  opened = record;
  $("opened").hidden = !record;
  if (record) {
    $("opened-what").textContent = "generation " + record.short_id + " (" + describe(record) + ", "
      + new Date(record.created_at).toLocaleString() + ")";
    $("rerun").disabled = !record.model;
  }
  for (const item of document.querySelectorAll(".history-item")) {
    item.classList.toggle("open", !!record && item.dataset.id === record.id);
  }
}

async function openGeneration(id) {
  if (controller) controller.abort();
  const response = await fetch("/v1/generations/" + encodeURIComponent(id), { headers: headers() });
  if (!response.ok) {
    setStatus("cannot open " + id + ": " + (await errorText(response)), true);
    return;
  }
  const record = await response.json();
  const outputs = record.outputs || [];
  const first = outputs[0] || { text: "", notes: [] };
  $("primeout").textContent = record.prime;
  $("gen").textContent = first.text;
  $("roll").hidden = true;
  $("download").hidden = true;
  loadPlayer([]);
  showOpened(record);
  setStatus("history " + record.id + (outputs.length > 1 ? ": the first of " + outputs.length + " samples" : ""));
  if (isMusic(record)) {
    drawRoll(first.notes || []);
    loadPlayer(first.notes || []);
    const mid = await fetch(record.midi_url, { headers: headers() });  // with the token, unlike a bare link
    if (mid.ok && opened === record) {
      if (midiUrl) URL.revokeObjectURL(midiUrl);
      midiUrl = URL.createObjectURL(await mid.blob());
      $("download").href = midiUrl;
      $("download").download = record.short_id + ".mid";
      $("download").hidden = false;
    }
  }
}

function rerun() {
  const record = opened;
  if (!record || !record.model) return;
  const p = record.params || {};
  $("model").value = record.model;
  $("model").dispatchEvent(new Event("change"));
  $("decoder").value = record.decoder;
  syncDecoder();
  $("length").value = p.length;
  if (p.temperature != null) $("temperature").value = p.temperature;
  if (p.beam_width != null) $("beam").value = p.beam_width;
  $("seed").value = record.seed;
  $("prime").value = record.prime;
  rerunExtras = {};
  for (const key of ["top_k", "top_p", "no_repeat_ngram", "num_samples", "beam_sample"]) {
    if (p[key] != null) rerunExtras[key] = p[key];
  }
  $("form").requestSubmit();
}

$("rerun").addEventListener("click", rerun);
$("history-search").addEventListener("submit", (event) => { event.preventDefault(); loadHistory(); });
$("history-q").addEventListener("input", () => {  // search as one types, once typing pauses
  clearTimeout(historyTimer);
  historyTimer = setTimeout(loadHistory, 300);
});
$("history-model").addEventListener("change", loadHistory);
