// affectstream browser client: camera + microphone over WHIP, live score timeline over Server-Sent Events.
// Plain standard APIs (getUserMedia, RTCPeerConnection, fetch, EventSource, canvas): no build step, no CDN.
// The page's state is exposed as `window.affectstream` (tests read it; so can a curious user).
"use strict";

(() => {
  const ICE_GATHERING_TIMEOUT_MS = 5000; // WHIP here has no trickle ICE: candidates travel in the offer
  const TABLE_ROWS = 12;
  const FIELDS = ["call_id", "participant_id", "role", "token"];

  const $ = (id) => document.getElementById(id);
  const state = {
    status: "idle", // idle | starting | connecting | live | stopping | stopped | error
    connection: "new",
    error: null,
    sessionUrl: null,
    deleteStatus: null, // what the agent answered to the last Stop (WHIP DELETE)
    feed: "closed", // closed | connecting | open | error
    scores: [], // every score message of the current stream, in arrival order
  };
  window.affectstream = state;

  let pc = null;
  let media = null;
  let feed = null;
  let token = "";

  // -- form -------------------------------------------------------------------------------------------------
  function prefill() {
    const params = new URLSearchParams(window.location.search);
    for (const name of FIELDS) {
      if (params.has(name)) $(name).value = params.get(name);
    }
    if (params.get("camera") === "0") $("camera").checked = false;
    if (params.has("token")) { // keep the token out of the address bar, history and bookmarks
      params.delete("token");
      const query = params.toString();
      window.history.replaceState(null, "", window.location.pathname + (query ? `?${query}` : ""));
    }
  }

  function identity() {
    return {
      call_id: $("call_id").value.trim(),
      participant_id: $("participant_id").value.trim(),
      role: $("role").value.trim() || "participant",
    };
  }

  function setStatus(status, detail) {
    state.status = status;
    const line = $("status");
    line.dataset.state = status;
    line.textContent = detail ? `${status}: ${detail}` : status;
    const busy = ["starting", "connecting", "live", "stopping"].includes(status);
    $("start").disabled = busy;
    $("stop").disabled = !busy || status === "stopping";
    for (const name of [...FIELDS, "camera"]) $(name).disabled = busy;
  }

  function fail(error) {
    state.error = String(error && error.message ? error.message : error);
    console.error("affectstream:", error);
    setStatus("error", state.error);
    release();
    if (state.sessionUrl) deleteSession(state.sessionUrl);
    state.sessionUrl = null;
  }

  // -- capture and WHIP ----------------------------------------------------------------------------------
  async function capture(withCamera) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("camera/microphone need a secure page (HTTPS or localhost)");
    }
    const audio = { channelCount: 1, echoCancellation: true, noiseSuppression: false };
    try {
      return await navigator.mediaDevices.getUserMedia({ audio, video: withCamera ? { width: 640 } : false });
    } catch (error) {
      if (withCamera && (error.name === "NotFoundError" || error.name === "NotReadableError")) {
        console.warn("affectstream: no usable camera, sending audio only", error);
        return navigator.mediaDevices.getUserMedia({ audio, video: false });
      }
      throw error;
    }
  }

  function iceGatheringComplete(peer) {
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ICE_GATHERING_TIMEOUT_MS); // send what we have rather than hang
      function done() {
        clearTimeout(timer);
        peer.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
      function check() {
        if (peer.iceGatheringState === "complete") done();
      }
      peer.addEventListener("icegatheringstatechange", check);
    });
  }

  async function postOffer(sdp, who) {
    const url = new URL("whip", document.baseURI);
    for (const [name, value] of Object.entries(who)) url.searchParams.set(name, value);
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` },
      body: sdp,
    });
    const text = await response.text();
    if (response.status !== 201) {
      throw new Error(`WHIP ${response.status} ${response.statusText}: ${text.trim().slice(0, 200)}`);
    }
    const location = response.headers.get("Location");
    if (!location) throw new Error("WHIP answer has no Location header");
    return { answer: text, sessionUrl: new URL(location, url).href };
  }

  async function start(event) {
    event.preventDefault();
    if (!$("stream-form").reportValidity()) return;
    const who = identity();
    token = $("token").value.trim();
    state.error = null;
    state.sessionUrl = null;
    setStatus("starting", "asking for camera and microphone");
    try {
      media = await capture($("camera").checked);
      $("preview").srcObject = media;
      openFeed(who);
      pc = new RTCPeerConnection({ iceServers: [] });
      pc.addEventListener("connectionstatechange", onConnectionState);
      for (const track of media.getTracks()) {
        pc.addTransceiver(track, { direction: "sendonly", streams: [media] });
      }
      await pc.setLocalDescription(await pc.createOffer());
      setStatus("connecting", "gathering ICE candidates");
      await iceGatheringComplete(pc);
      const { answer, sessionUrl } = await postOffer(pc.localDescription.sdp, who);
      if (!pc) { // stopped while the offer was in flight
        await deleteSession(sessionUrl);
        return;
      }
      state.sessionUrl = sessionUrl;
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      setStatus("connecting", "WebRTC");
    } catch (error) {
      fail(error);
    }
  }

  function onConnectionState() {
    if (!pc) return;
    state.connection = pc.connectionState;
    if (pc.connectionState === "connected") setStatus("live", "sending camera and microphone");
    if (pc.connectionState === "failed") fail(new Error("WebRTC connection failed (ICE)"));
    if (pc.connectionState === "disconnected") setStatus("connecting", "connection interrupted");
  }

  async function deleteSession(sessionUrl) {
    try {
      const response = await fetch(sessionUrl, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } });
      state.deleteStatus = response.status;
      if (!response.ok) console.warn(`affectstream: DELETE answered ${response.status}`);
    } catch (error) {
      console.warn("affectstream: DELETE failed (the agent ends the session when the media stops)", error);
    }
  }

  async function stop() {
    setStatus("stopping");
    if (pc) pc.removeEventListener("connectionstatechange", onConnectionState);
    const sessionUrl = state.sessionUrl;
    state.sessionUrl = null;
    if (sessionUrl) await deleteSession(sessionUrl);
    release();
    // the feed stays open: the stream's last window is scored after it ends
    setStatus("stopped", "the last window's score may still arrive");
  }

  function release() {
    if (pc) {
      pc.removeEventListener("connectionstatechange", onConnectionState);
      pc.close();
      pc = null;
    }
    if (media) {
      for (const track of media.getTracks()) track.stop();
      media = null;
    }
    $("preview").srcObject = null;
  }

  // -- score feed ----------------------------------------------------------------------------------------
  function openFeed(who) {
    if (feed) feed.close();
    state.scores = [];
    render();
    const path = `streams/${encodeURIComponent(who.call_id)}/${encodeURIComponent(who.participant_id)}/scores`;
    const url = new URL(path, document.baseURI);
    url.searchParams.set("token", token); // EventSource cannot send an Authorization header
    state.feed = "connecting";
    feed = new EventSource(url);
    feed.addEventListener("open", () => { state.feed = "open"; });
    feed.addEventListener("error", () => { state.feed = feed.readyState === 2 ? "error" : "connecting"; });
    feed.addEventListener("score", (event) => {
      try {
        state.scores.push(JSON.parse(event.data));
      } catch (error) {
        console.warn("affectstream: unreadable score event", error);
        return;
      }
      render();
    });
  }

  function render() {
    window.affectstreamChart.draw($("chart"), state.scores);
    renderLegend();
    renderTable();
  }

  function renderLegend() {
    const legend = $("task-legend");
    legend.replaceChildren();
    for (const [task, color] of window.affectstreamChart.taskColors(state.scores)) {
      const item = document.createElement("span");
      item.textContent = `■ ${task} (M)`;
      item.style.color = color;
      legend.append(item);
    }
  }

  function cell(row, value) {
    const td = document.createElement("td");
    td.textContent = value;
    row.append(td);
  }

  const fmt = (value, digits = 2) => (typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "–");

  function renderTable() {
    const body = $("windows").tBodies[0];
    body.replaceChildren();
    for (const message of state.scores.slice(-TABLE_ROWS).reverse()) {
      const tasks = message.scores && message.scores.length ? message.scores : [{ task: "(shed)" }];
      const latency = Object.values(message.latencies_ms || {}).reduce((sum, ms) => sum + ms, 0);
      for (const task of tasks) {
        const row = document.createElement("tr");
        row.dataset.seq = String(message.seq);
        if (message.shed) row.className = "shed";
        cell(row, String(message.seq));
        cell(row, `${fmt(message.start_s, 1)}–${fmt(message.end_s, 1)}`);
        cell(row, message.closed_by);
        cell(row, task.task);
        for (const head of ["m", "t", "a", "v"]) cell(row, fmt(task[head]));
        cell(row, fmt(message.quality && message.quality.speech_ratio));
        cell(row, fmt(message.quality && message.quality.face_visible_ratio));
        cell(row, fmt(latency, 0));
        body.append(row);
      }
    }
  }

  // -- wiring --------------------------------------------------------------------------------------------
  prefill();
  render();
  $("stream-form").addEventListener("submit", start);
  $("stop").addEventListener("click", stop);
  window.addEventListener("pagehide", () => {
    if (state.sessionUrl) {
      fetch(state.sessionUrl, { method: "DELETE", headers: { Authorization: `Bearer ${token}` }, keepalive: true });
    }
  });
})();
