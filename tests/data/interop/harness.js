// Interop harness (tests/test_browser_interop.py): one RTCPeerConnection with max-bundle, a data
// channel, no network but the peer. Signalling is carried by the test through page.evaluate.
window.interop = (() => {
  const state = { pc: null, channel: null, received: [], states: [] };
  function watch(pc) {
    pc.onconnectionstatechange = () => state.states.push(pc.connectionState);
    pc.ondatachannel = (e) => wire(e.channel);
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
    async offer() {
      const pc = state.pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
      watch(pc);
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
