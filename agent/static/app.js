// affectstream browser client: camera + microphone over WHIP, live score timeline over Server-Sent Events.
// Plain standard APIs (getUserMedia, RTCPeerConnection, fetch, streams, canvas): no build step, no CDN.
// The page's state is exposed as `window.affectstream` (tests read it; so can a curious user); tokens are not.
// Tokens come in the URL's fragment, `#token=…&view_token=…`, which the browser never sends to a server (so no
// access log holds them), and leave it at once; they travel only as bearer headers.
"use strict";

(() => {
  const ICE_GATHERING_TIMEOUT_MS = 5000; // WHIP here has no trickle ICE: candidates travel in the offer
  const TABLE_ROWS = 12;
  const FEED_RETRY_MS = 2000;
  const IDENTITY = ["call_id", "participant_id", "role"]; // from the query string
  const TOKENS = ["token", "view_token"]; // from the fragment: publisher (WHIP), viewer (the score feed)
  const FIELDS = [...IDENTITY, ...TOKENS];

  const $ = (id) => document.getElementById(id);
  const state = {
    status: "idle", // idle | starting | connecting | live | stopping | stopped | error
    connection: "new",
    error: null,
    sessionUrl: null,
    deleteStatus: null, // what the agent answered to the last Stop (WHIP DELETE)
    feed: "closed", // closed | connecting | open | error
    feedError: null, // why the agent refused the feed (401/403), if it did
    scores: [], // every score message of the current stream, in arrival order
  };
  window.affectstream = state;

  let pc = null;
  let media = null;
  let feed = null; // the AbortController of the open score feed
  let token = ""; // publisher token: WHIP POST and DELETE
  let viewToken = ""; // viewer token: the score feed (a development token may do both)
  const seen = new Set(); // windows shown: the feed delivers at least once, and a reconnect repeats its backlog

  // -- form -------------------------------------------------------------------------------------------------
  function prefill() {
    const params = new URLSearchParams(window.location.search);
    for (const name of IDENTITY) {
      if (params.has(name)) $(name).value = params.get(name);
    }
    if (params.get("camera") === "0") $("camera").checked = false;
    const fragment = new URLSearchParams(window.location.hash.slice(1));
    for (const name of TOKENS) {
      if (fragment.has(name)) $(name).value = fragment.get(name);
    }
    const queryToken = TOKENS.some((name) => params.has(name));
    for (const name of TOKENS) params.delete(name);
    if (queryToken || window.location.hash) { // out of the address bar, history and bookmarks
      const query = params.toString();
      window.history.replaceState(null, "", window.location.pathname + (query ? `?${query}` : ""));
    }
    if (queryToken) { // it was sent to the server already: not used, and the person is told why
      state.error = "a token in the query string is not used: pass it after # (#token=…), which stays in the browser";
      setStatus("error", state.error);
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
    viewToken = $("view_token").value.trim() || token;
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

  // -- score feed: Server-Sent Events read with fetch (EventSource cannot send a bearer header) -----------
  function openFeed(who) {
    if (feed) feed.abort();
    state.scores = [];
    state.feedError = null;
    seen.clear();
    render();
    const path = `streams/${encodeURIComponent(who.call_id)}/${encodeURIComponent(who.participant_id)}/scores`;
    feed = new AbortController();
    readFeed(new URL(path, document.baseURI), viewToken, feed.signal);
  }

  async function readFeed(url, credential, signal) {
    while (!signal.aborted) {
      state.feed = "connecting";
      try {
        const response = await fetch(url, {
          headers: { Authorization: `Bearer ${credential}`, Accept: "text/event-stream" }, cache: "no-store", signal,
        });
        if (response.status === 401 || response.status === 403) { // retrying does not make a token valid
          state.feed = "error";
          state.feedError = `${response.status}: ${(await response.text()).trim().slice(0, 200)}`;
          console.warn(`affectstream: score feed refused (${state.feedError})`);
          return;
        }
        if (!response.ok || !response.body) throw new Error(`score feed answered ${response.status}`);
        state.feed = "open";
        await readEvents(response.body);
      } catch (error) {
        if (signal.aborted) return;
        console.warn("affectstream: score feed interrupted, reconnecting", error);
      }
      if (signal.aborted) return;
      state.feed = "connecting";
      await new Promise((resolve) => setTimeout(resolve, FEED_RETRY_MS));
    }
  }

  async function readEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        onEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  function onEvent(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // a comment: connected, heartbeat
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      if (field === "data") data.push(value);
    }
    if (event !== "score" || !data.length) return;
    let message;
    try {
      message = JSON.parse(data.join("\n"));
    } catch (error) {
      console.warn("affectstream: unreadable score event", error);
      return;
    }
    const id = JSON.stringify([message.stream && message.stream.key, message.session ?? null, message.seq]);
    if (seen.has(id)) return;
    seen.add(id);
    state.scores.push(message);
    render();
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
