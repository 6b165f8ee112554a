#!/usr/bin/env node
// Wait on several ipcfs mailboxes at once and print messages as they arrive.
//
//     node poll_wait.mjs -n N MAILBOX_DIR [MAILBOX_DIR ...]
//
// Prints each message as "MAILBOX: payload" (one trailing newline of the payload
// dropped) and exits after N messages, never taking more than N.
//
// Why no poll/epoll here: Node's event loop (libuv) only polls sockets, pipes and
// terminals; regular files, which is what a mailbox's .receive is, always go through
// its thread pool, and neither `fs` nor `fs.promises` exposes poll(2) (that would
// need a native addon). The two pure-Node ways to wait are
//   - a blocking read per mailbox, parked on the thread pool: each
//     waiting mailbox pins one of the pool's 4 threads (UV_THREADPOOL_SIZE), so with
//     four mailboxes every other fs call in the process stalls; and a read parked in
//     the kernel cannot be cancelled: FileHandle.close() waits for it, and so does
//     process.exit() (libuv joins its pool threads), so after its Nth message the
//     program could not exit until another message came, which it would then take;
//   - non-blocking reads: open .receive with O_NONBLOCK, where a read of an empty
//     mailbox fails at once with EAGAIN, and retry after a short, growing pause.
// This program does the second: one loop visits the mailboxes in turn, takes at most
// one message from each per round (so no mailbox starves another), and when a whole
// round found nothing it sleeps 1 ms, then 2, 4, ... up to 50 ms until a message
// arrives. Only one read is ever in flight, so stopping after N takes exactly N.
// The cost is latency of up to MAX_PAUSE_MS and one read per mailbox per pause while
// idle; for an instant wake-up, use a blocking FileHandle read as in consumer.mjs.
import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { basename, join } from "node:path";
import { argv, exit, stderr, stdout } from "node:process";
import { setTimeout as sleep } from "node:timers/promises";

const CHUNK = 64 * 1024;
const MIN_PAUSE_MS = 1;
const MAX_PAUSE_MS = 50;

/**
 * Takes one whole message from a non-blocking .receive FileHandle: a Buffer, or null
 * if the mailbox was empty (EAGAIN before the first byte; another receiver may have
 * been faster). A message is delivered whole, so EAGAIN mid-message is an error.
 */
async function tryReceive(handle) {
  const chunk = Buffer.alloc(CHUNK);
  const parts = [];
  for (;;) {
    let bytesRead;
    try {
      ({ bytesRead } = await handle.read(chunk, 0, CHUNK, null));
    } catch (err) {
      if (err.code === "EAGAIN" && parts.length === 0) return null;
      throw err;
    }
    if (bytesRead === 0) return Buffer.concat(parts); // end of message
    parts.push(Buffer.from(chunk.subarray(0, bytesRead)));
  }
}

const [flag, count, ...dirs] = argv.slice(2);
const n = Number(count);
if (flag !== "-n" || !Number.isSafeInteger(n) || n < 0 || dirs.length === 0) {
  stderr.write("usage: node poll_wait.mjs -n N MAILBOX_DIR [MAILBOX_DIR ...]\n");
  exit(2);
}

const mailboxes = [];
try {
  for (const dir of dirs) {
    const handle = await open(join(dir, ".receive"), constants.O_RDONLY | constants.O_NONBLOCK);
    mailboxes.push({ name: basename(dir), handle });
  }
  stderr.write(`poll_wait: waiting on ${mailboxes.map((m) => m.name).join(", ")}\n`);

  let seen = 0;
  let pause = MIN_PAUSE_MS;
  while (seen < n) {
    let found = false;
    for (const { name, handle } of mailboxes) {
      if (seen === n) break;
      const message = await tryReceive(handle);
      if (message === null) continue;
      const text = message.toString("utf8");
      stdout.write(`${name}: ${text.endsWith("\n") ? text.slice(0, -1) : text}\n`);
      seen++;
      found = true;
    }
    if (found) {
      pause = MIN_PAUSE_MS;
    } else {
      await sleep(pause);
      pause = Math.min(pause * 2, MAX_PAUSE_MS);
    }
  }
} finally {
  await Promise.all(mailboxes.map((m) => m.handle.close()));
}
