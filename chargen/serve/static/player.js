// --- player: the notes of the piano roll through a small Web Audio synth ---
const LOOKAHEAD_S = 1.0;  // notes starting this soon are handed to the audio clock
const RELEASE_S = 0.08;
const player = { context: null, output: null, bus: null, notes: [], next: 0, startAt: 0, span: 0,
                 voices: new Set(), timer: null, frame: 0, scheduled: 0, playing: false, position: 0 };
window.chargenPlayer = player;

function clockText(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
}

function showPosition() {
  $("clock").textContent = clockText(player.position) + " / " + clockText(player.span);
  if (!$("roll").hidden) drawRoll(player.notes, player.playing ? player.position : null);
}

function loadPlayer(notes) {
  stopPlayback();
  player.notes = notes;
  player.span = notes.length ? rollSpan(notes) : 0;
  player.position = 0;
  $("player").hidden = !notes.length;
  $("clock").textContent = "0:00 / " + clockText(player.span);
}

function voice([pitch, start, stop, velocity]) {
  const ctx = player.context;
  const on = player.startAt + start;
  const off = player.startAt + Math.max(stop, start + 0.05);
  const peak = 0.3 * (velocity / 127);
  const osc = ctx.createOscillator();
  osc.type = "triangle";
  osc.frequency.value = 440 * Math.pow(2, (pitch - 69) / 12);
  const envelope = ctx.createGain();
  envelope.gain.setValueAtTime(0, on);
  envelope.gain.linearRampToValueAtTime(peak, on + 0.01);
  envelope.gain.setTargetAtTime(peak * 0.35, on + 0.01, 0.4);  // decays like a struck string
  envelope.gain.setTargetAtTime(0, off, RELEASE_S / 3);
  osc.connect(envelope).connect(player.bus);
  osc.start(on);
  osc.stop(off + RELEASE_S * 2);
  player.voices.add(osc);
  osc.onended = () => { player.voices.delete(osc); envelope.disconnect(); };
  player.scheduled++;
}

function tick() {
  if (!player.playing) return;
  player.position = player.context.currentTime - player.startAt;
  while (player.next < player.notes.length && player.notes[player.next][1] < player.position + LOOKAHEAD_S) {
    voice(player.notes[player.next++]);
  }
  if (player.position > player.span + RELEASE_S) stopPlayback();
}

function animate() {
  if (!player.playing) return;
  player.position = player.context.currentTime - player.startAt;
  showPosition();
  player.frame = requestAnimationFrame(animate);
}

async function startPlayback() {
  if (!player.notes.length) return;
  stopPlayback();
  if (!player.context) {
    player.context = new (window.AudioContext || window.webkitAudioContext)();
    player.output = player.context.createDynamicsCompressor();  // many voices at once never clip
    player.output.connect(player.context.destination);
  }
  await player.context.resume();
  player.bus = player.context.createGain();
  player.bus.gain.value = 0.6;
  player.bus.connect(player.output);
  player.startAt = player.context.currentTime + 0.05;
  player.next = 0;
  player.scheduled = 0;
  player.playing = true;
  $("play").disabled = true;
  $("halt").disabled = false;
  tick();
  player.timer = setInterval(tick, 100);
  animate();
}

function stopPlayback() {
  if (player.timer !== null) clearInterval(player.timer);
  cancelAnimationFrame(player.frame);
  player.timer = null;
  const wasPlaying = player.playing;
  player.playing = false;
  if (player.bus) {  // fade out rather than click
    const now = player.context.currentTime;
    player.bus.gain.setTargetAtTime(0, now, 0.02);
    for (const osc of player.voices) osc.stop(now + 0.1);  // a later stop() replaces the scheduled one
    player.bus = null;
  }
  $("play").disabled = false;
  $("halt").disabled = true;
  if (wasPlaying) showPosition();
}

$("play").addEventListener("click", startPlayback);
$("halt").addEventListener("click", stopPlayback);
