// A pass-through encoded transform on the agent's audio receiver, for measuring (LiveKit mode, with
// ?measure=playout only). It reports each packet's RTP timestamp and payload size, so the page can tell
// when a reply's first packet goes to playout where the RTP audio-level header is missing (the LiveKit
// SFU does not forward it): while the agent is silent its Opus encoder is in DTX - a 2-byte frame and
// a refresh every 400 ms - so a reply starts with the first run of full-size packets.
"use strict";

self.onrtctransform = (event) => {
  const { readable, writable } = event.transformer;
  readable.pipeThrough(new TransformStream({
    transform(frame, controller) {
      controller.enqueue(frame);  // the packet goes on first: the report must not delay it
      self.postMessage([frame.getMetadata().rtpTimestamp, frame.data.byteLength]);
    },
  })).pipeTo(writable).catch(() => { /* the call ended */ });
};
