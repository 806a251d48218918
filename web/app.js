// The page: one experience in both modes. "direct": WebRTC straight to the agent process (no
// server needed); "livekit": a LiveKit room the agent worker joins. The token server says which.
// Events from the agent (transcripts, state, per-turn latency) arrive as JSON on "agent-events".
"use strict";

const $ = (id) => document.getElementById(id);
// Observable state: the browser tests read window.S; people read the page.
const S = (window.S = { conn: "idle", mode: null, errors: [], transcripts: [], turns: [], agentState: "idle",
                        agentRmsMax: 0, agentRms: [], micRmsMax: 0, sessionId: null });
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
function meter(stream, element, onLevel) {
  const ctx = new AudioContext();
  ctx.resume();
  const analyser = ctx.createAnalyser();
  ctx.createMediaStreamSource(stream).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(buf);
    const rms = Math.sqrt(buf.reduce((s, v) => s + v * v, 0) / buf.length);
    element.value = rms;
    onLevel(rms);
  }, 50);
  return () => { clearInterval(timer); ctx.close(); };
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

function playAgent(stream) {
  const audio = $("agent-audio");
  audio.srcObject = stream;
  audio.play().catch(() => {});
  return meter(stream, $("agent-level"), (rms) => {
    S.agentRmsMax = Math.max(S.agentRmsMax, rms);
    S.agentRms.push([performance.now(), rms]);
    if (S.agentRms.length > 4000) S.agentRms.shift();
  });
}

async function connectDirect(tok, mic) {
  const pc = new RTCPeerConnection();
  const stops = [];
  mic.getTracks().forEach((t) => pc.addTrack(t, mic));
  const channel = pc.createDataChannel("agent-events", { ordered: true });
  channel.onmessage = (m) => onAgentEvent(JSON.parse(m.data));
  pc.ontrack = (e) => stops.push(playAgent(e.streams[0] || new MediaStream([e.track])));
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
  const room = new LK.Room();
  const stops = [];
  room.on(LK.RoomEvent.TrackSubscribed, (track) => {
    if (track.kind === "audio") stops.push(playAgent(new MediaStream([track.mediaStreamTrack])));
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
  return { close() { stops.forEach((stop) => stop()); room.disconnect(); } };
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
    const stopMic = meter(mic, $("mic-level"), (rms) => { S.micRmsMax = Math.max(S.micRmsMax, rms); });
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
