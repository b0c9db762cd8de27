// Interop harness (tests/test_browser_interop.py): one RTCPeerConnection with max-bundle, a data
// channel, no network but the peer. Signalling is carried by the test through page.evaluate.
window.interop = (() => {
  const state = { pc: null, channel: null, received: [], states: [], videoFrames: 0, audioPeak: 0 };
  function onRemoteTrack(e) {
    const stream = e.streams[0] || new MediaStream([e.track]);
    if (e.track.kind === "video") {
      const video = document.createElement("video");
      video.muted = true; video.playsInline = true; video.srcObject = stream;
      document.body.appendChild(video);
      const count = () => { state.videoFrames += 1; video.requestVideoFrameCallback(count); };
      video.requestVideoFrameCallback(count);
      video.play();
    } else {
      // Chromium feeds remote WebRTC audio to WebAudio only while the stream plays in an element.
      const audio = document.createElement("audio");
      audio.muted = true; audio.srcObject = stream; document.body.appendChild(audio); audio.play();
      const ctx = new AudioContext();
      const analyser = ctx.createAnalyser();
      ctx.createMediaStreamSource(new MediaStream([e.track])).connect(analyser);
      const data = new Float32Array(analyser.fftSize);
      setInterval(() => {
        analyser.getFloatTimeDomainData(data);
        for (const v of data) state.audioPeak = Math.max(state.audioPeak, Math.abs(v));
      }, 50);
    }
  }
  function watch(pc) {
    pc.onconnectionstatechange = () => state.states.push(pc.connectionState);
    pc.ondatachannel = (e) => wire(e.channel);
    pc.ontrack = onRemoteTrack;
  }
  function wire(channel) {
    state.channel = channel;
    channel.onmessage = (e) => state.received.push(String(e.data));
  }
  async function gathered(pc) {
    if (pc.iceGatheringState === "complete") return;
    await new Promise((resolve) => {
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") resolve(); };
    });
  }
  return {
    state,
    async offer(withMedia = false) {
      const pc = state.pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
      watch(pc);
      if (withMedia) {
        const local = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
        for (const track of local.getTracks()) pc.addTrack(track, local);
      }
      wire(pc.createDataChannel("interop"));
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      return pc.localDescription.sdp;
    },
    async accept(sdp) { await state.pc.setRemoteDescription({ type: "answer", sdp }); },
    async answer(sdp) {
      const pc = state.pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
      watch(pc);
      await pc.setRemoteDescription({ type: "offer", sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
      return pc.localDescription.sdp;
    },
    send(text) { state.channel.send(text); },
    channelOpen() { return !!state.channel && state.channel.readyState === "open"; },
    async selectedRemote() {
      const stats = await state.pc.getStats();
      for (const s of stats.values()) {
        if (s.type === "transport" && s.selectedCandidatePairId) {
          const pair = stats.get(s.selectedCandidatePairId);
          const remote = stats.get(pair.remoteCandidateId);
          return { type: remote.candidateType, address: remote.address };
        }
      }
      return null;
    },
  };
})();
