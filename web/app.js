// The page: one experience in both modes. "direct": WebRTC straight to the agent process (no
// server needed); "livekit": a LiveKit room the agent worker joins. The token server says which.
// Events from the agent (transcripts, state, per-turn latency) arrive as JSON on "agent-events".
"use strict";

const $ = (id) => document.getElementById(id);
// Observable state: the browser tests read window.S; people read the page.
const S = (window.S = { conn: "idle", mode: null, errors: [], transcripts: [], turns: [], agentState: "idle",
                        agentRmsMax: 0, agentRms: [], micRmsMax: 0, sessionId: null,
                        // what this page hears, on the host's wall clock in ms (performance.timeOrigin +
                        // now()): [t, rms] every ~5 ms of the microphone and of the agent's audio, for
                        // measuring latency where the person is (scripts/bench_duplex.py --browser)
                        // played: [t, level, bytes] of each agent packet as the receiver hands it to
                        // playout (getSynchronizationSources), without the WebAudio path: level from the RTP
                        // audio-level header (null where it is missing: LiveKit's SFU drops it), bytes
                        // its payload size (LiveKit mode with ?measure=playout only, else null)
                        levels: { mic: [], agent: [], played: [] }, heard: { v2v: null, stop: null },
                        jitterBufferMs: null });
let call = null; // {close()} of the live call

function showError(message) {
  S.errors.push(message);
  $("error").textContent = message;
  $("error").hidden = false;
  setStatus("error");
}
function setStatus(text) { S.conn = text; $("status").textContent = text; }
function setAgentState(state) {
  S.agentState = state;
  $("agent-state").textContent = "agent: " + state;
  $("agent-state").className = "pill state-" + state;
}

function addTranscript(role, text, interrupted) {
  S.transcripts.push({ role, text, interrupted: !!interrupted });
  const li = document.createElement("li");
  li.className = role + (interrupted ? " interrupted" : "");
  li.textContent = text;
  $("transcript").appendChild(li);
  li.scrollIntoView({ block: "nearest" });
}

function addTurn(rec) {
  S.turns.push(rec);
  const fmt = (v) => (v === null || v === undefined ? "-" : Math.round(v));
  // onset -> silent: from when the user really started talking to the agent's last sample leaving it
  const cut = rec.interrupted
    ? `cut: onset to silent ${fmt(rec.onset_to_silence_ms)} (VAD ${fmt(rec.barge_in_detect_ms)})` : "";
  const row = document.createElement("tr");
  for (const v of [rec.turn_id, fmt(rec.voice_to_voice_ms), fmt(rec.endpointing_ms), fmt(rec.stt_ms),
                   fmt(rec.llm_ttft_ms), fmt(rec.tts_ttfa_ms), fmt(rec.tts_first_to_publish_ms), cut]) {
    const td = document.createElement("td");
    td.textContent = v;
    row.appendChild(td);
  }
  $("latency").querySelector("tbody").appendChild(row);
}

function onAgentEvent(ev) {
  switch (ev.type) {
    case "session": S.sessionId = ev.session_id; $("test-voice").hidden = !ev.test_voice; break;
    case "agent_state": setAgentState(ev.state); break;
    case "user_state": break;
    case "transcript": addTranscript(ev.role, ev.text, ev.interrupted); break;
    case "turn": addTurn(ev); break;
    case "error": showError("agent: " + ev.message); break;
  }
}

// Level meters; the remote stream must also sit on a media element for Chromium to route it to WebAudio.
// Each reads the last 256 samples (5.3 ms at 48 kHz) every 5 ms into `levels`; the meter shows them.
const LEVEL_MS = 5, LEVELS_KEPT = 120000;  // ten minutes of each timeline
function meter(stream, element, levels, onLevel) {
  const ctx = new AudioContext();
  ctx.resume();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 256;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  let shown = 0;
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(buf);
    const rms = Math.sqrt(buf.reduce((s, v) => s + v * v, 0) / buf.length);
    const now = performance.timeOrigin + performance.now();
    levels.push([now, rms]);
    if (levels.length > LEVELS_KEPT) levels.splice(0, levels.length - LEVELS_KEPT);
    if (now - shown > 50) { element.value = rms; shown = now; }
    onLevel(rms, now);
  }, LEVEL_MS);
  return () => { clearInterval(timer); ctx.close(); };
}

// Latency as heard here, from the two timelines: the user's speech end (the mic quiet for
// QUIET_MS) -> the agent's next audio; and the user's onset over the agent -> the agent's last audio.
const VOICED = 0.01, QUIET_MS = 300;
const listener = { micOn: false, micLastLoud: 0, agentLastLoud: 0, waitingReply: null, bargeAt: null };
function onMicLevel(rms, now) {
  S.micRmsMax = Math.max(S.micRmsMax, rms);
  const L = listener;
  if (rms > VOICED) {
    if (!L.micOn && now - L.agentLastLoud < 40) L.bargeAt = now;  // talking over the agent
    L.micOn = true;
    L.micLastLoud = now;
    L.waitingReply = null;
  } else if (L.micOn && now - L.micLastLoud > QUIET_MS) {
    L.micOn = false;
    L.waitingReply = L.micLastLoud;
  }
}
function onAgentLevel(rms, now) {
  const L = listener;
  if (rms > VOICED) {
    L.agentLastLoud = now;
    if (L.waitingReply !== null) { showHeard("v2v", now - L.waitingReply); L.waitingReply = null; }
  } else if (L.bargeAt !== null && now - L.agentLastLoud > 100) {
    showHeard("stop", L.agentLastLoud - L.bargeAt);
    L.bargeAt = null;
  }
}
function showHeard(kind, ms) {
  if (kind) S.heard[kind] = ms;
  const fmt = (v) => (v === null || v === undefined ? "-" : Math.round(v) + " ms");
  $("heard").textContent = `heard here: last reply ${fmt(S.heard.v2v)} after you stopped; ` +
    `last cut-in silenced the agent ${fmt(S.heard.stop)} after you began; ` +
    `this browser's jitter buffer holds ${fmt(S.jitterBufferMs)}`;
}

async function getToken() {
  let resp;
  try {
    resp = await fetch("/api/token", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
  } catch (e) {
    throw new Error("token server unreachable: " + e.message);
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error("token rejected: " + (body.error || resp.status));
  return body;
}

async function getMicrophone() {
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
  } catch (e) {
    throw new Error(e.name === "NotAllowedError" ? "microphone access denied" : "no microphone: " + e.message);
  }
}

// Ask the browser's jitter buffer to hold as little of the agent's audio as it safely can: its own
// default target costs every reply and every cut-in tens of ms more on loopback and on a LAN (it still
// grows by itself when the network jitters). Chromium's RTCRtpReceiver.jitterBufferTarget, in ms.
const JITTER_TARGET_MS = 0;
function lowLatency(receiver) {
  if (!receiver || !receiver.track || receiver.track.kind !== "audio") return () => {};
  if ("jitterBufferTarget" in receiver) {
    try { receiver.jitterBufferTarget = JITTER_TARGET_MS; } catch (e) { /* not supported: the default stays */ }
  }
  const sizes = payloadSizes(receiver);
  // each packet as it leaves the jitter buffer for playout, with its level and size where known
  let lastPlayed = 0;
  const playout = setInterval(() => {
    for (const s of receiver.getSynchronizationSources()) {
      if (s.timestamp <= lastPlayed) continue;
      const level = s.audioLevel === undefined ? null : s.audioLevel;
      const bytes = sizes.bytes(s.rtpTimestamp);
      if (level === null && bytes === null) continue;
      lastPlayed = s.timestamp;
      S.levels.played.push([s.timestamp, level, bytes]);
      if (S.levels.played.length > LEVELS_KEPT) S.levels.played.splice(0, S.levels.played.length - LEVELS_KEPT);
    }
  }, LEVEL_MS);
  // what the jitter buffer really holds (the browser's own stats, averaged over the last 2 s)
  let last = null;
  const timer = setInterval(async () => {
    const stats = await receiver.getStats().catch(() => null);
    stats && stats.forEach((s) => {
      if (s.type !== "inbound-rtp" || s.kind !== "audio" || !s.jitterBufferEmittedCount) return;
      if (last && s.jitterBufferEmittedCount > last.count) {
        S.jitterBufferMs = (1000 * (s.jitterBufferDelay - last.delay)) / (s.jitterBufferEmittedCount - last.count);
        showHeard(null, 0);
      }
      last = { delay: s.jitterBufferDelay, count: s.jitterBufferEmittedCount };
    });
  }, 2000);
  return () => { clearInterval(timer); clearInterval(playout); };
}

// Payload size of each received packet by RTP timestamp, from web/playout_probe.js, in LiveKit mode
// (whose SFU drops the audio-level header) and only when the page is opened with ?measure=playout
// (scripts/bench_duplex.py --browser does): the transform puts a worker on the audio's path, and
// Chromium runs it only on a receiver that sends nothing (webrtc-encoded-transform issue 314), so the
// room is joined with two peer connections (livekit-client's default is one); for everyone else
// bytes() is null.
const MEASURE_PLAYOUT = new URLSearchParams(location.search).get("measure") === "playout";
const SIZES_KEPT = 1000;  // 20 s of 20 ms packets: far more than the jitter buffer ever holds
const probes = new WeakMap();  // receiver -> its sizes
const probeWorkers = new Set();  // every probe's worker, ended with the call
const NO_SIZES = { bytes: () => null };
function payloadSizes(receiver) { return probes.get(receiver) || NO_SIZES; }

// Chromium passes a receiver's frames around a transform set after the "track" event that made the
// receiver, and livekit-client announces a track later: so every peer connection made from here on
// gets its audio receivers probed in that event.
let probing = false;
function probeNewPeerConnections() {
  if (probing || !("RTCRtpScriptTransform" in window)) return;
  probing = true;
  window.RTCPeerConnection = new Proxy(window.RTCPeerConnection, {
    construct(target, args) {
      const pc = Reflect.construct(target, args);
      pc.addEventListener("track", (e) => { if (e.track.kind === "audio") probe(e.receiver); });
      return pc;
    },
  });
}
function probe(receiver) {
  const byTimestamp = new Map();
  let worker;
  try {
    worker = new Worker("playout_probe.js");
    receiver.transform = new RTCRtpScriptTransform(worker, {});
  } catch (e) {
    S.errors.push("playout probe unavailable: " + e.message);
    if (worker) worker.terminate();
    return;
  }
  worker.onmessage = (m) => {
    const [rtpTimestamp, bytes] = m.data;
    byTimestamp.set(rtpTimestamp, bytes);
    if (byTimestamp.size > SIZES_KEPT) byTimestamp.delete(byTimestamp.keys().next().value);
  };
  probeWorkers.add(worker);
  probes.set(receiver, { bytes: (rtpTimestamp) => (byTimestamp.has(rtpTimestamp) ? byTimestamp.get(rtpTimestamp) : null) });
}
function stopProbes() {
  probeWorkers.forEach((worker) => worker.terminate());
  probeWorkers.clear();
}

function playAgent(stream) {
  const audio = $("agent-audio");
  audio.srcObject = stream;
  audio.play().catch(() => {});
  return meter(stream, $("agent-level"), S.levels.agent, (rms, now) => {
    S.agentRmsMax = Math.max(S.agentRmsMax, rms);
    S.agentRms.push([performance.now(), rms]);
    if (S.agentRms.length > 40000) S.agentRms.shift();
    onAgentLevel(rms, now);
  });
}

async function connectDirect(tok, mic) {
  const pc = new RTCPeerConnection();
  const stops = [];
  mic.getTracks().forEach((t) => pc.addTrack(t, mic));
  const channel = pc.createDataChannel("agent-events", { ordered: true });
  channel.onmessage = (m) => onAgentEvent(JSON.parse(m.data));
  pc.ontrack = (e) => {
    stops.push(lowLatency(e.receiver));
    stops.push(playAgent(e.streams[0] || new MediaStream([e.track])));
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "connected") setStatus("connected");
    if (["failed", "disconnected", "closed"].includes(pc.connectionState) && call) showError("call dropped");
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {  // non-trickle: send the offer with all candidates
    const check = () => pc.iceGatheringState === "complete" && done();
    pc.onicegatheringstatechange = check;
    setTimeout(done, 3000);
    check();
  });
  let resp;
  try {
    resp = await fetch(tok.url, { method: "POST", headers: { "Content-Type": "application/json",
      Authorization: "Bearer " + tok.token }, body: JSON.stringify(pc.localDescription) });
  } catch (e) {
    pc.close();
    throw new Error("agent unreachable at " + tok.url);
  }
  const answer = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    pc.close();
    const message = (answer.error && (answer.error.message || answer.error)) || resp.status;
    throw new Error((resp.status === 401 ? "token rejected by the agent: " : "agent refused the call: ") + message);
  }
  S.sessionId = answer.session_id || S.sessionId;
  await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
  return { close() {
    try { if (channel.readyState === "open") channel.send(JSON.stringify({ type: "bye" })); } catch (e) { /* closing */ }
    stops.forEach((stop) => stop());
    pc.close();
  } };
}

async function connectLiveKit(tok, mic) {
  const LK = window.LivekitClient;
  if (MEASURE_PLAYOUT) probeNewPeerConnections();
  const room = new LK.Room(MEASURE_PLAYOUT ? { singlePeerConnection: false } : {});
  const stops = [];
  room.on(LK.RoomEvent.TrackSubscribed, (track) => {
    if (track.kind !== "audio") return;
    stops.push(lowLatency(track.receiver));
    stops.push(playAgent(new MediaStream([track.mediaStreamTrack])));
  });
  room.on(LK.RoomEvent.DataReceived, (payload, participant, kind, topic) => {
    if (topic === "agent-events") onAgentEvent(JSON.parse(new TextDecoder().decode(payload)));
  });
  room.on(LK.RoomEvent.Disconnected, () => { if (call) showError("call dropped"); });
  try {
    await room.connect(tok.url, tok.token);
  } catch (e) {
    throw new Error("LiveKit server unreachable or token rejected: " + e.message);
  }
  // Source Microphone: the agent (livekit-agents' RoomIO) listens to microphone tracks only; a raw
  // MediaStreamTrack is published as "Unknown" unless it is named here
  await room.localParticipant.publishTrack(mic.getAudioTracks()[0], { source: LK.Track.Source.Microphone });
  setStatus("connected");
  return { close() { stops.forEach((stop) => stop()); room.disconnect(); stopProbes(); } };
}

async function connect() {
  $("connect").disabled = true;
  $("error").hidden = true;
  setStatus("connecting");
  try {
    const tok = await getToken();
    S.mode = tok.mode;
    $("mode").textContent = "mode: " + tok.mode;
    const mic = await getMicrophone();
    const stopMic = meter(mic, $("mic-level"), S.levels.mic, onMicLevel);
    const inner = await (tok.mode === "livekit" ? connectLiveKit(tok, mic) : connectDirect(tok, mic));
    call = { close() { inner.close(); stopMic(); mic.getTracks().forEach((t) => t.stop()); } };
    $("disconnect").disabled = false;
  } catch (e) {
    showError(e.message);
    $("connect").disabled = false;
  }
}

function disconnect() {
  const current = call;
  call = null;
  if (current) current.close();
  setStatus("disconnected");
  setAgentState("idle");
  $("connect").disabled = false;
  $("disconnect").disabled = true;
}

$("connect").onclick = connect;
$("disconnect").onclick = disconnect;
window.addEventListener("beforeunload", disconnect);
