#!/usr/bin/env node
// Send N numbered jobs ("job 1" ... "job N") to an ipcfs mailbox.
//
//     node producer.mjs MAILBOX_DIR N
//
// Everything written between one open and close of MAILBOX_DIR/.send is one message,
// delivered atomically at close: fs.promises.writeFile() opens, writes and closes, so
// each call sends exactly one message, and it rejects if the close (the delivery) fails.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { argv, exit, stderr } from "node:process";

const [mailbox, count] = argv.slice(2);
const n = Number(count);
if (argv.length !== 4 || !Number.isSafeInteger(n) || n < 0) {
  stderr.write("usage: node producer.mjs MAILBOX_DIR N\n");
  exit(2);
}

const send = join(mailbox, ".send");
for (let i = 1; i <= n; i++) {
  await writeFile(send, `job ${i}\n`); // one open, one write, one close: one message
}
