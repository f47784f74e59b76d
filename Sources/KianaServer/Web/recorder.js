// The microphone recorder of the web UI's push-to-talk, an AudioWorklet: it runs on the browser's
// audio thread, so a busy page (a long answer being rendered) cannot make it drop or garble sound,
// as the main-thread ScriptProcessorNode it replaces could. The node's input is mixed down to one
// channel by the audio graph (channelCount 1, explicit); blocks of 128 frames are gathered into
// chunks of 2,048 (about 43 ms at 48 kHz) and handed to the page, whose buffer is transferred.
const CHUNK = 2048;

class KianaRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.chunk = new Float32Array(CHUNK);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0]; // absent while the source is not yet connected
    if (channel) {
      let at = 0;
      while (at < channel.length) {
        const n = Math.min(CHUNK - this.filled, channel.length - at);
        this.chunk.set(channel.subarray(at, at + n), this.filled);
        this.filled += n;
        at += n;
        if (this.filled === CHUNK) {
          this.port.postMessage(this.chunk, [this.chunk.buffer]);
          this.chunk = new Float32Array(CHUNK);
          this.filled = 0;
        }
      }
    }
    return true; // keep running until the page disconnects the node
  }
}

registerProcessor("kiana-recorder", KianaRecorder);
