// Loaded last: the panels that depend on the model list refresh once it is in; then the page starts.
function modelsLoaded() {
  historyModels();
  loadHistory();
  loadCurves();
}

syncDecoder();
loadModels();
