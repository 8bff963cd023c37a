// hand2world live client.
//
// Design choices:
// - Hand tracking runs in this page (MediaPipe Tasks vision, CPU delegate, VIDEO mode) with the
//   model bundle and wasm served by our own server: the page requests nothing elsewhere.
// - Only landmarks and the head pose leave the page (one `hands` message per tracked frame on the
//   data channel "hands", unordered and without retransmits: a late hand pose is worthless).
// - Landmarks are sent for the raw (unmirrored) camera frame; the preview is mirrored by CSS only.
// - The head pose is a camera-to-world matrix in the OpenCV convention (x right, y down, z forward),
//   sent row-major; mouse drag turns it, keys move it, R / "Reset view" resets it.
// - WebXR mode (shown only where a headset offers immersive sessions with hand tracking): the 25
//   XRHand joints and the viewer pose go out as `xrhands` messages; the server maps them to 21.
// - `window.h2w` exposes the live state (stats, counters) for people debugging and for tests.
// - Kiosk mode (`serve --kiosk`): the server says this page's role in `kiosk` messages; only the
//   active visitor's hands and head pose are sent, queued ones watch the shared output with their
//   place in the queue shown. The kiosk page reconnects by itself (after a `busy` refusal, a lost
//   connection or a server restart), with a growing delay of 1 to 10 s.
// - A `ping` every 5 s keeps a session open while no hands are sent (the server closes a session
//   that sends nothing for its idle timeout). `?access_token=` of this page's URL is forwarded
//   to every request (servers started with --token).

import { FilesetResolver, HandLandmarker } from "/vendor/tasks-vision/vision_bundle.mjs";

const $ = (id) => document.getElementById(id);
const ACCESS = new URLSearchParams(location.search).get("access_token");
function withAccess(url) {  // forwards ?access_token= to the server's checked routes
  if (!ACCESS) return url;
  return `${url}${url.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(ACCESS)}`;
}
const state = {
  config: null, landmarker: null, stream: null, pc: null, dc: null, running: false,
  token: localStorage.getItem("h2w-token"), stats: null, started: null, errors: [],
  framesTracked: 0, handsDetected: 0, messagesSent: 0, controlImages: 0, trackMs: 0,
  head: { yaw: 0, pitch: 0, t: [0, 0, 0] }, lastVideoTime: -1, recorder: null,
  kiosk: false, kioskState: null, reconnects: 0, retryTimer: null, pingTimer: null,
};
window.h2w = state;

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
  if (isError) state.errors.push(text);
}

// ---------- config, scenes, upload ----------
async function loadConfig() {
  state.config = await (await fetch(withAccess("/config"))).json();
  const badge = $("mode-badge");
  if (state.config.mode === "preview") {
    badge.textContent = "PREVIEW: conditioning render over the scene photo, not generated video";
    badge.className = "badge preview";
  } else {
    badge.textContent = "generated video";
    badge.className = "badge generator";
  }
  const kiosk = state.config.kiosk || new URLSearchParams(location.search).has("kiosk");
  document.body.classList.toggle("kiosk", kiosk);
  state.kiosk = kiosk;
  return kiosk;
}

async function loadScenes(select) {
  const q = state.token ? `?token=${encodeURIComponent(state.token)}` : "";
  const data = await (await fetch(withAccess(`/scenes${q}`))).json();
  const sel = $("scene");
  const keep = select || sel.value || data.default;
  sel.replaceChildren(...data.scenes.map((s) => {
    const o = document.createElement("option");
    o.value = s.name;
    o.textContent = s.kind === "upload" ? `uploaded ${s.name.slice(7, 13)}` : s.name;
    return o;
  }));
  sel.value = keep;
}

function sendScene() {
  send({ type: "scene", scene: $("scene").value, ...(state.token ? { token: state.token } : {}) });
}

async function upload(file) {
  if (!file) return;
  if (file.size > state.config.max_upload_bytes) {
    status(`photo too large (${file.size} bytes; limit ${state.config.max_upload_bytes})`, true);
    return;
  }
  const q = state.token ? `?token=${encodeURIComponent(state.token)}` : "";
  const r = await fetch(withAccess(`/upload${q}`), { method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file });
  const data = await r.json();
  if (!r.ok) { status(`upload refused: ${data.detail}`, true); return; }
  state.token = data.token;
  localStorage.setItem("h2w-token", data.token);
  await loadScenes(data.scene);
  status(`uploaded ${data.width}x${data.height}`);
  if (state.running) sendScene();
}

// ---------- head / camera control ----------
function c2w() {
  const { yaw, pitch, t } = state.head;
  const cy = Math.cos(yaw), sy = Math.sin(yaw), cp = Math.cos(pitch), sp = Math.sin(pitch);
  // R = Ry(yaw) * Rx(pitch); OpenCV camera: yaw > 0 looks right, pitch > 0 looks up (y is down)
  const R = [[cy, sy * sp, sy * cp], [0, cp, -sp], [-sy, cy * sp, cy * cp]];
  return [R[0][0], R[0][1], R[0][2], t[0], R[1][0], R[1][1], R[1][2], t[1], R[2][0], R[2][1], R[2][2], t[2], 0, 0, 0, 1];
}

function move(local) {  // move in the camera's own frame
  const m = c2w();
  for (let i = 0; i < 3; i++) state.head.t[i] += m[i * 4] * local[0] + m[i * 4 + 1] * local[1] + m[i * 4 + 2] * local[2];
}

function resetView() {
  state.head = { yaw: 0, pitch: 0, t: [0, 0, 0] };
  if (mayDrive()) send({ type: "reset" });
}

function setupHeadControls() {
  const wrap = $("output-wrap");
  let drag = null;
  wrap.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY }; wrap.setPointerCapture(e.pointerId); wrap.focus(); });
  wrap.addEventListener("pointerup", () => { drag = null; });
  wrap.addEventListener("pointermove", (e) => {
    if (!drag) return;
    state.head.yaw += (e.clientX - drag.x) * 0.004;
    state.head.pitch = Math.max(-1.2, Math.min(1.2, state.head.pitch - (e.clientY - drag.y) * 0.004));
    drag = { x: e.clientX, y: e.clientY };
  });
  window.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    const step = 0.02, turn = 0.03;
    const k = e.key.toLowerCase();
    const moves = { w: [0, 0, step], s: [0, 0, -step], a: [-step, 0, 0], d: [step, 0, 0], q: [0, -step, 0], e: [0, step, 0] };
    if (moves[k]) move(moves[k]);
    else if (e.key === "ArrowLeft") state.head.yaw -= turn;
    else if (e.key === "ArrowRight") state.head.yaw += turn;
    else if (e.key === "ArrowUp") state.head.pitch = Math.min(1.2, state.head.pitch + turn);
    else if (e.key === "ArrowDown") state.head.pitch = Math.max(-1.2, state.head.pitch - turn);
    else if (k === "r") resetView();
    else return;
    e.preventDefault();
  });
}

// ---------- tracking ----------
async function createLandmarker() {
  const fileset = await FilesetResolver.forVisionTasks("/vendor/tasks-vision/wasm");
  return HandLandmarker.createFromOptions(fileset, {
    baseOptions: { modelAssetPath: "/models/hand_landmarker.task", delegate: "CPU" },
    runningMode: "VIDEO", numHands: 2,
    minHandDetectionConfidence: 0.5, minHandPresenceConfidence: 0.5, minTrackingConfidence: 0.5,
  });
}

const r5 = (v) => Math.round(v * 1e5) / 1e5;
const BONES = [[0, 1], [1, 2], [2, 3], [3, 4], [0, 5], [5, 6], [6, 7], [7, 8], [5, 9], [9, 10], [10, 11], [11, 12],
  [9, 13], [13, 14], [14, 15], [15, 16], [13, 17], [0, 17], [17, 18], [18, 19], [19, 20]];

function drawOverlay(result) {
  const cv = $("overlay"), video = $("webcam");
  cv.width = video.videoWidth; cv.height = video.videoHeight;
  const g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  result.landmarks.forEach((lm, i) => {
    const side = result.handedness[i]?.[0]?.categoryName?.toLowerCase();
    g.strokeStyle = g.fillStyle = side === "left" ? "rgb(60,140,255)" : "rgb(255,140,30)";
    g.lineWidth = 3;
    for (const [a, b] of BONES) {
      g.beginPath(); g.moveTo(lm[a].x * cv.width, lm[a].y * cv.height); g.lineTo(lm[b].x * cv.width, lm[b].y * cv.height); g.stroke();
    }
    for (const p of lm) { g.beginPath(); g.arc(p.x * cv.width, p.y * cv.height, 3, 0, 2 * Math.PI); g.fill(); }
  });
}

// Whether this page may steer: always, except a kiosk visitor waiting for its turn.
function mayDrive() {
  return !(state.config && state.config.kiosk) || (state.kioskState && state.kioskState.role === "active");
}

function track() {
  if (!state.running) return;
  const video = $("webcam");
  if (video.readyState >= 2 && video.currentTime !== state.lastVideoTime && state.landmarker) {
    state.lastVideoTime = video.currentTime;
    const t0 = performance.now();
    const result = state.landmarker.detectForVideo(video, t0);
    state.trackMs = 0.9 * state.trackMs + 0.1 * (performance.now() - t0);
    state.framesTracked += 1;
    const hands = result.landmarks.map((lm, i) => ({
      side: (result.handedness[i]?.[0]?.categoryName || "Right").toLowerCase(),
      score: r5(result.handedness[i]?.[0]?.score ?? 1),
      image: lm.map((p) => [r5(p.x), r5(p.y), r5(p.z)]),
      world: result.worldLandmarks[i].map((p) => [r5(p.x), r5(p.y), r5(p.z)]),
    }));
    if (hands.length) state.handsDetected += 1;
    drawOverlay(result);
    if (mayDrive() && send({ type: "hands", t: t0, hands, head: { c2w: c2w() } })) state.messagesSent += 1;
  }
  requestAnimationFrame(track);
}

// ---------- connection ----------
function send(msg) {
  if (!state.dc || state.dc.readyState !== "open") return false;
  state.dc.send(JSON.stringify(msg));
  return true;
}

function onChannelMessage(e) {
  if (typeof e.data !== "string") {  // control-render preview (JPEG)
    const url = URL.createObjectURL(new Blob([e.data], { type: "image/jpeg" }));
    const img = $("control");
    const old = img.src;
    img.src = url;
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    state.controlImages += 1;
    return;
  }
  const msg = JSON.parse(e.data);
  if (msg.type === "stats") { state.stats = msg; renderHud(); }
  else if (msg.type === "kiosk") { state.kioskState = msg; renderKiosk(); }
  else if (msg.type === "error") status(`server: ${msg.error}: ${msg.detail}`, true);
  else if (msg.type === "started") { state.started = msg; status(`streaming (${msg.mode}) on scene ${msg.scene}`); }
}

function renderHud() {
  const s = state.stats || {};
  const f = (v, d = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
  $("hud").textContent = [
    `${(s.mode || "").toUpperCase()}${s.mode === "preview" ? " (not generated)" : ""}`,
    `fps        ${f(s.fps)}`,
    `latency    ${f(s.latency_ms, 0)} ms (p95 ${f(s.latency_p95_ms, 0)})`,
    `queue      ${s.queue_depth ?? "–"}  dropped ${s.messages_dropped ?? "–"}`,
    `frames     ${s.frames_out ?? "–"}  late ${s.frames_dropped ?? "–"}`,
    `hands      ${s.hands_seen ?? "–"}  tracking ${f(state.trackMs, 0)} ms`,
  ].join("\n");
}

function renderKiosk() {
  const k = state.kioskState, el = $("kiosk-banner");
  if (!k) { el.hidden = true; return; }
  el.hidden = false;
  el.className = `kiosk-banner ${k.role}${k.attract ? " attract" : ""}`;
  if (k.role === "active") {
    el.textContent = k.attract ? "Your turn: raise your hands to play (attract loop running)"
      : `Your turn (${Math.ceil(k.turn_left_s)} s left${k.queue ? `, ${k.queue} waiting` : ""})`;
  } else {
    el.textContent = `You are number ${k.position} in the queue: watching live${k.attract ? " (attract loop)" : ""}`;
  }
}

// Kiosk pages never stay stopped: a refusal or a lost connection schedules another try.
function scheduleReconnect(why) {
  if (!state.kiosk || state.retryTimer) return;
  const delay = Math.min(10_000, 1000 * 2 ** Math.min(state.reconnects, 4));
  state.reconnects += 1;
  status(`${why}; retrying in ${Math.round(delay / 1000)} s`, true);
  state.retryTimer = setTimeout(() => { state.retryTimer = null; start(); }, delay);
}

async function waitIce(pc) {
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const check = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 3000);  // go with what was gathered
  });
}

async function start({ webcam = true } = {}) {
  $("start").disabled = true;
  try {
    if (webcam) {
      status("opening the webcam…");
      state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
      const video = $("webcam");
      video.srcObject = state.stream;
      await video.play();
      if (!state.landmarker) { status("loading the hand tracker…"); state.landmarker = await createLandmarker(); }
    }
    status("connecting…");
    // STUN/TURN from the server (`serve --ice-server`); none configured: host candidates only.
    const pc = new RTCPeerConnection({ iceServers: (state.config && state.config.ice_servers) || [] });
    state.pc = pc;
    const dc = pc.createDataChannel("hands", { ordered: false, maxRetransmits: 0 });
    dc.binaryType = "arraybuffer";
    dc.onmessage = onChannelMessage;
    dc.onopen = () => { status("connected"); state.reconnects = 0; };
    dc.onclose = () => { if (state.pc === pc && state.running) { stop(); scheduleReconnect("connection closed"); } };
    state.dc = dc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (e) => {
      $("output").srcObject = e.streams[0] || new MediaStream([e.track]);
      $("output").play().catch(() => {});
      $("record").disabled = false;
    };
    pc.onconnectionstatechange = () => {
      if (state.pc !== pc || !state.running) return;
      if (["failed", "closed"].includes(pc.connectionState)) {
        status(`connection ${pc.connectionState}`, true);
        stop();
        scheduleReconnect(`connection ${pc.connectionState}`);
      } else if (pc.connectionState === "disconnected") {  // e.g. the server went away: give it 3 s
        setTimeout(() => {
          if (state.pc === pc && pc.connectionState === "disconnected") { stop(); scheduleReconnect("connection lost"); }
        }, 3000);
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitIce(pc);
    const body = { sdp: pc.localDescription.sdp, type: "offer", scene: $("scene").value };
    if (state.token) body.token = state.token;
    const r = await fetch(withAccess("/offer"), { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const answer = await r.json();
    if (!r.ok) throw new Error(`${answer.error}: ${answer.detail}`);
    await pc.setRemoteDescription(answer);
    state.running = true;
    state.pingTimer = setInterval(() => send({ type: "ping" }), 5000);
    $("stop").disabled = false;
    if (webcam) requestAnimationFrame(track);
  } catch (err) {
    status(`could not start: ${err.message || err}`, true);
    stop();
    scheduleReconnect(`could not start (${err.message || err})`);
  }
}

function stop() {
  state.running = false;
  clearInterval(state.pingTimer);
  state.kioskState = null;
  renderKiosk();
  if (state.xr) state.xr.end().catch(() => {});
  if (state.recorder && state.recorder.state !== "inactive") state.recorder.stop();
  if (state.pc) state.pc.close();
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.pc = state.dc = state.stream = null;
  $("start").disabled = false;
  $("stop").disabled = true;
  $("record").disabled = true;
}

// ---------- WebXR mode (headsets: hand joints + viewer pose, no webcam) ----------
// Untested on a device here (no headset on the build machines); the server side of `xrhands`
// (25 -> 21 joints, projection into the session camera) is covered by the Python tests.
const XR_JOINTS = ["wrist",
  "thumb-metacarpal", "thumb-phalanx-proximal", "thumb-phalanx-distal", "thumb-tip",
  ...["index-finger", "middle-finger", "ring-finger", "pinky-finger"].flatMap((f) =>
    ["metacarpal", "phalanx-proximal", "phalanx-intermediate", "phalanx-distal", "tip"].map((j) => `${f}-${j}`))];

function glToCvRowMajor(m) {  // column-major WebXR (y up, -z forward) -> row-major OpenCV camera-to-world
  const out = new Array(16);
  for (let r = 0; r < 4; r++) {
    for (let c = 0; c < 4; c++) out[r * 4 + c] = m[c * 4 + r] * (c === 1 || c === 2 ? -1 : 1);
  }
  return out;
}

async function xrMode() {
  if (!navigator.xr) return null;
  for (const mode of ["immersive-ar", "immersive-vr"]) {
    if (await navigator.xr.isSessionSupported(mode).catch(() => false)) return mode;
  }
  return null;
}

async function startXR(mode) {
  if (!state.running) await start({ webcam: false });
  const session = await navigator.xr.requestSession(mode, {
    requiredFeatures: ["hand-tracking"], optionalFeatures: ["local-floor", "dom-overlay"],
    domOverlay: { root: document.body },
  });
  state.xr = session;
  const gl = document.createElement("canvas").getContext("webgl2", { xrCompatible: true });
  session.updateRenderState({ baseLayer: new XRWebGLLayer(session, gl) });
  const space = await session.requestReferenceSpace("local-floor").catch(() => session.requestReferenceSpace("local"));
  session.addEventListener("end", () => { state.xr = null; });
  const onFrame = (t, frame) => {
    if (!state.xr) return;
    session.requestAnimationFrame(onFrame);
    const viewer = frame.getViewerPose(space);
    if (!viewer) return;
    const hands = [];
    for (const source of session.inputSources) {
      if (!source.hand || !["left", "right"].includes(source.handedness)) continue;
      const joints = [];
      for (const name of XR_JOINTS) {
        const pose = frame.getJointPose(source.hand.get(name), space);
        if (!pose) break;
        const p = pose.transform.position;
        joints.push([r5(p.x), r5(p.y), r5(p.z)]);
      }
      if (joints.length === 25) hands.push({ side: source.handedness, joints });
    }
    if (send({ type: "xrhands", t, hands, head: { c2w: glToCvRowMajor(viewer.transform.matrix) } })) state.messagesSent += 1;
  };
  session.requestAnimationFrame(onFrame);
}

// ---------- recording ----------
function toggleRecord() {
  const btn = $("record");
  if (state.recorder && state.recorder.state === "recording") { state.recorder.stop(); return; }
  const types = ["video/mp4;codecs=avc1", "video/mp4", "video/webm;codecs=vp8", "video/webm"];
  const mimeType = types.find((t) => MediaRecorder.isTypeSupported(t)) || "";
  const chunks = [];
  const rec = new MediaRecorder($("output").srcObject, mimeType ? { mimeType } : {});
  rec.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  rec.onstop = () => {
    const blob = new Blob(chunks, { type: rec.mimeType });
    const a = $("download");
    a.href = URL.createObjectURL(blob);
    a.download = `hand2world-${Date.now()}.${rec.mimeType.includes("mp4") ? "mp4" : "webm"}`;
    a.hidden = false;
    state.recording = { bytes: blob.size, type: rec.mimeType };
    btn.textContent = "Record";
    btn.classList.remove("recording");
  };
  rec.start(500);
  state.recorder = rec;
  btn.textContent = "Stop recording";
  btn.classList.add("recording");
}

// ---------- boot ----------
async function boot() {
  const kiosk = await loadConfig();
  await loadScenes();
  setupHeadControls();
  renderHud();
  $("start").onclick = () => start();
  $("stop").onclick = () => { clearTimeout(state.retryTimer); state.retryTimer = null; stop(); };
  $("reset-view").onclick = resetView;
  $("record").onclick = toggleRecord;
  $("scene").onchange = () => { if (state.running) sendScene(); };
  $("upload").onchange = (e) => upload(e.target.files[0]);
  const mode = await xrMode();
  if (mode) {
    $("xr").hidden = false;
    $("xr").onclick = () => startXR(mode).catch((err) => status(`WebXR: ${err.message || err}`, true));
  }
  state.ready = true;
  if (kiosk) start();
}

boot().catch((err) => status(`failed to load: ${err.message || err}`, true));
