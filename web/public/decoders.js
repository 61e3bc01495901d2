// The two decoders behind one small interface:
//   new Decoder(onPicture, onError)
//   name                    'webcodecs' | 'broadway'
//   configure(info)         stream-info: codec string, width, height
//   decode(unit)            {seq, captureUs, key, catchUp, data: Uint8Array (Annex-B access unit)};
//                           false when the decoder cannot take it (not configured yet)
//   backlog                 access units handed over but not decoded yet
//   warm                    whether the backlog tells anything about the decoder's speed yet
//   close()
// Each calls onPicture(picture, unit) when a picture is ready, and onError(error) when
// decoding fails. `picture` is {width, height, draw(canvas), release()}, width and
// height the displayed size: `draw(canvas)` paints it and releases it, `release()`
// drops it unpainted. `unit` is the access unit the picture came from; undefined when
// the decoder could not tell which.

/** WebCodecs: hardware decoding where the browser has it; secure contexts only. */
export class WebCodecsDecoder {
  static supported() {
    return typeof VideoDecoder === 'function' && window.isSecureContext;
  }

  constructor(onPicture, onError) {
    this.name = 'webcodecs';
    this.onPicture = onPicture;
    this.units = new Map();
    this.decoder = new VideoDecoder({
      output: (frame) => this.output(frame),
      error: (e) => onError(e),
    });
    this.configured = null;
  }

  configure(info) {
    const key = `${info.codec} ${info.width}x${info.height}`;
    if (this.configured === key) return;
    // Annex-B input: no `description`; each key chunk carries SPS and PPS.
    this.decoder.configure({ codec: info.codec, optimizeForLatency: true });
    this.configured = key;
  }

  get backlog() {
    return this.decoder.decodeQueueSize;
  }

  /** Whether the decoder is up to speed (WebCodecs is at once). */
  get warm() {
    return true;
  }

  decode(unit) {
    if (this.decoder.state !== 'configured') return false;
    this.units.set(unit.seq, unit);
    this.decoder.decode(new EncodedVideoChunk({
      type: unit.key ? 'key' : 'delta',
      timestamp: unit.seq,
      data: unit.data,
    }));
    return true;
  }

  output(frame) {
    const unit = this.units.get(frame.timestamp);
    this.units.delete(frame.timestamp);
    // Forget units the decoder will never return (dropped or failed).
    for (const seq of this.units.keys()) {
      if (seq < frame.timestamp) this.units.delete(seq);
    }
    this.onPicture({
      width: frame.displayWidth,
      height: frame.displayHeight,
      draw: (canvas) => {
        canvas.getContext('2d').drawImage(frame, 0, 0, canvas.width, canvas.height);
        frame.close();
      },
      release: () => frame.close(),
    }, unit);
  }

  close() {
    if (this.decoder.state !== 'closed') this.decoder.close();
  }
}

/**
 * I420 to RGBA on the CPU, for canvases without WebGL (BT.601, limited range).
 * `planes` holds y, u, v views whose rows are `stride` (y) and `stride / 2` wide.
 */
function i420ToRgba({ y: yp, u: up, v: vp, stride }, width, height, out) {
  const cs = stride >> 1;
  for (let y = 0; y < height; y++) {
    const cRow = (y >> 1) * cs;
    let o = y * width * 4;
    for (let x = 0; x < width; x++) {
      const c = 298 * (yp[y * stride + x] - 16);
      const d = up[cRow + (x >> 1)] - 128;
      const e = vp[cRow + (x >> 1)] - 128;
      out[o] = (c + 409 * e + 128) >> 8;
      out[o + 1] = (c - 100 * d - 208 * e + 128) >> 8;
      out[o + 2] = (c + 516 * d + 128) >> 8;
      out[o + 3] = 255;
      o += 4;
    }
  }
}

/**
 * Whether a decoded picture goes on screen at once. A live one does, unless the
 * decoder holds more than the frame after it: then it is catching up through a
 * burst and only its newest picture is worth painting. (Waiting for an empty
 * backlog instead held back most pictures of a pipelined decoder that keeps up:
 * Broadway at 720p painted one frame in five.)
 */
export function paintAtOnce(unit, backlog) {
  return Boolean(unit && !unit.catchUp && backlog !== undefined && backlog <= 1);
}

let yuvCanvasLoaded;
/** Starts fetching Broadway's WebGL renderer ahead of the first picture. */
export function preloadBroadway() {
  loadYuvCanvas();
}

function loadYuvCanvas() {
  // YUVCanvas.js is a classic (UMD) script that sets window.YUVCanvas.
  yuvCanvasLoaded ??= new Promise((resolve) => {
    const s = document.createElement('script');
    s.src = 'vendor/broadway/YUVCanvas.js';
    s.onload = () => resolve(window.YUVCanvas);
    s.onerror = () => resolve(null);
    document.head.append(s);
  });
  return yuvCanvasLoaded;
}

/**
 * Broadway.js (software, Baseline only) in a Web Worker: its Decoder.js doubles as
 * the worker script. Works on plain HTTP, where WebCodecs is not available.
 */
export class BroadwayDecoder {
  static supported() {
    return typeof Worker === 'function' && typeof WebAssembly !== 'undefined';
  }

  constructor(onPicture, onError) {
    this.name = 'broadway';
    this.onPicture = onPicture;
    this.onError = onError;
    this.pending = []; // units handed to the worker, not yet back as pictures
    this.worker = null;
    this.size = null;
    this.renderer = null; // {canvas, yuv: YUVCanvas|null, image: ImageData|null}
    loadYuvCanvas().then((cls) => { this.YUVCanvas = cls; });
  }

  start() {
    this.worker?.terminate();
    this.outputs = 0;
    this.pending = [];
    this.worker = new Worker('vendor/broadway/Decoder.js');
    this.worker.onerror = (e) => this.onError(new Error(`Broadway worker: ${e.message}`));
    this.worker.onmessage = (e) => this.message(e.data);
    this.worker.postMessage({ type: 'Broadway.js - Worker init', options: { rgb: false, reuseMemory: true } });
  }

  configure(info) {
    this.display = { width: info.width, height: info.height };
    const size = `${info.width}x${info.height}`;
    // A new size means a new SPS: start a fresh decoder rather than trust it to cope.
    if (this.size !== size || !this.worker) {
      this.size = size;
      this.start();
    }
  }

  get backlog() {
    return this.pending.length;
  }

  /** Whether the worker has decoded a picture yet: until then (it loads and
   * compiles Broadway for a while) a backlog says nothing about its speed. */
  get warm() {
    return this.outputs > 0;
  }

  decode(unit) {
    if (!this.worker) return false;
    const copy = unit.data.slice(); // transferable copy
    this.pending.push(unit);
    this.worker.postMessage({ buf: copy.buffer, offset: 0, length: copy.length, info: { seq: unit.seq } }, [copy.buffer]);
    return true;
  }

  message(data) {
    if (data.consoleLog) return;
    if (!data.buf) return;
    this.outputs++;
    const seq = data.infos?.[0]?.seq;
    let unit = this.pending.shift();
    // Units older than this picture gave none (Broadway skips what it cannot
    // decode): they leave the backlog too.
    while (unit && seq !== undefined && unit.seq < seq) unit = this.pending.shift();
    // Broadway returns whole macroblocks (e.g. 368 rows for 360): crop to the
    // stream's displayed size, which only ever trims the right and bottom.
    const stride = data.width;
    const ySize = stride * data.height;
    const planes = {
      stride,
      y: new Uint8Array(data.buf, 0, ySize),
      u: new Uint8Array(data.buf, ySize, ySize >> 2),
      v: new Uint8Array(data.buf, ySize + (ySize >> 2), ySize >> 2),
    };
    const width = Math.min(this.display?.width ?? data.width, data.width);
    const height = Math.min(this.display?.height ?? data.height, data.height);
    const giveBack = () => this.worker?.postMessage({ reuse: data.buf }, [data.buf]);
    this.onPicture({
      width,
      height,
      draw: (canvas) => {
        this.paint(canvas, planes, width, height);
        giveBack();
      },
      release: giveBack,
    }, unit);
  }

  paint(canvas, planes, width, height) {
    let r = this.renderer;
    if (!r || r.canvas !== canvas || r.width !== width || r.height !== height) {
      r = this.renderer = { canvas, width, height, yuv: null, image: null };
      if (this.YUVCanvas) {
        const gl = new this.YUVCanvas({ canvas, width, height, contextOptions: { preserveDrawingBuffer: true } });
        if (gl.contextGL) r.yuv = gl;
      }
      if (!r.yuv) {
        canvas.width = width;
        canvas.height = height;
        r.ctx = canvas.getContext('2d');
        r.image = r.ctx.createImageData(width, height);
      }
    }
    if (r.yuv) {
      const cs = planes.stride >> 1;
      r.yuv.drawNextOuptutPictureGL({
        yData: planes.y.subarray(0, planes.stride * height),
        yDataPerRow: planes.stride,
        yRowCnt: height,
        uData: planes.u.subarray(0, cs * (height >> 1)),
        uDataPerRow: cs,
        uRowCnt: height >> 1,
        vData: planes.v.subarray(0, cs * (height >> 1)),
        vDataPerRow: cs,
        vRowCnt: height >> 1,
      });
    } else {
      i420ToRgba(planes, width, height, r.image.data);
      r.ctx.putImageData(r.image, 0, 0);
    }
  }

  close() {
    this.worker?.terminate();
    this.worker = null;
  }
}
