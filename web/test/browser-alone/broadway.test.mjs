// Broadway.js (asm.js, on the CPU) decoding 1280x720 as fast as the stream comes:
// run alone, after the other browser tests, since it measures how fast the page
// decodes and needs a core to itself.
import { test, before, after } from 'node:test';
import { startServer, launchBrowser, playsLive } from '../browser/helpers.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

test('the size comes from the stream: Broadway at 1280x720, keeping up', async () => {
  const server = await startServer(['--width', '1280', '--height', '720', '--bitrate', '2000000']);
  try {
    await playsLive(browser, server, '/?decoder=broadway', 'broadway', 1280, 720, 'broadway-1280x720');
  } finally {
    await server.stop();
  }
});
