#!/usr/bin/env node
// Receive N messages from an ipcfs mailbox and print them, one per line.
//
//     node consumer.mjs MAILBOX_DIR N
//
// One FileHandle of MAILBOX_DIR/.receive serves any number of messages: each read
// continues the current message, a read returning 0 bytes marks its end, and the next
// read takes (and, while the mailbox is empty, waits for) the next one. The consumer
// stops after N messages without taking an (N+1)th.
//
// fs.promises runs each read(2) on libuv's thread pool, so a read waiting on an empty
// mailbox parks one pool thread while the event loop stays free. The reads pass
// position null: read(2) from the current position, never pread(2) at an offset.
import { open } from "node:fs/promises";
import { join } from "node:path";
import { argv, exit, stderr, stdout } from "node:process";

const CHUNK = 64 * 1024;

/** Yields whole messages (Buffers) from an open .receive FileHandle, forever. */
async function* messages(receive) {
  const chunk = Buffer.alloc(CHUNK);
  let parts = [];
  for (;;) {
    const { bytesRead } = await receive.read(chunk, 0, CHUNK, null);
    if (bytesRead > 0) {
      parts.push(Buffer.from(chunk.subarray(0, bytesRead))); // copy: chunk is reused
    } else { // end of this message; the next read takes the next one
      yield Buffer.concat(parts);
      parts = [];
    }
  }
}

const [mailbox, count] = argv.slice(2);
const n = Number(count);
if (argv.length !== 4 || !Number.isSafeInteger(n) || n < 0) {
  stderr.write("usage: node consumer.mjs MAILBOX_DIR N\n");
  exit(2);
}

if (n > 0) {
  const receive = await open(join(mailbox, ".receive"), "r");
  try {
    let received = 0;
    for await (const message of messages(receive)) {
      stdout.write(message);
      if (message.at(-1) !== 0x0a) stdout.write("\n");
      if (++received === n) break; // ends the generator: no read for an (n+1)th message
    }
  } finally {
    await receive.close();
  }
}
