#!/usr/bin/env node
// An SMSC that herald did not write: node-smpp's server (npm `smpp`, pinned in package.json),
// driven by tests/it/smpp_contract.rs to check herald's SMPP client on the wire as a
// third-party implementation reads it.
//
//   node tests/contract/smsc.js [PORT] [--end-first-session-after MS]
//
// PORT 0 or none: any free port on 127.0.0.1. --end-first-session-after: MS after the first
// successful bind, this SMSC unbinds that session itself (as SMSCs do on maintenance).
//
// stdout is one JSON object per line. The first is {"port":N}; then one line per PDU the
// client sends (bind_*, submit_sm, deliver_sm_resp, enquire_link, unbind, anything else) with
// what node-smpp decoded, and one per request this SMSC sends (deliver_sm, and with
// "from":"smsc" enquire_link and unbind) and per answer the client gives to those.
// Bytes are hex, so the test decodes them with herald's own decoder and compares.
//
// Behaviour: bind_transceiver is accepted for system_id `herald` with password `secret` only
// (another system_id: ESME_RBINDFAIL, a wrong password: ESME_RINVPASWD); the other binds are
// refused with ESME_RBINDFAIL, since herald binds as a transceiver. Each submit_sm gets a
// message id in upper-case hex with a leading zero, and ~50 ms later a delivery receipt
// (esm_class 0x04, stat:DELIVRD) that names the message by the same number in DECIMAL, as some
// providers do. Odd-numbered receipts also carry the TLVs receipted_message_id (decimal) and
// message_state (2); even-numbered ones only the text, so both ways of reading a receipt run.
// A submit_sm from a number (source TON 1) is answered by the recipient too: two MO messages,
// one in GSM-7 and one in UCS-2, encoded by node-smpp. A submit_sm to 4915100000NNN is
// refused with command_status NNN (decimal; a header-only submit_sm_resp, as SMPP 3.4 says for
// errors), or with NNN 000 never answered at all. After each bind this SMSC sends one
// enquire_link of its own.
//
// The process exits when its stdin closes, so a test that dies leaves no SMSC behind.

'use strict';

const smpp = require('smpp');

const SYSTEM_ID = 'herald';
const PASSWORD = 'secret';
// herald's idempotency key TLV (src/channel/sms/wire.rs KEY_TLV). node-smpp does not know it
// and keeps it as raw bytes under its numeric tag, which is what an SMSC that ignores
// vendor-specific TLVs does.
const KEY_TLV = 0x1400;
// First message id: its hex form starts with 0, so "canonical" (no leading zeros, lower
// case) differs from what the SMSC said.
const FIRST_ID = 0x0a1b2c00;
const RECEIPT_DELAY_MS = 50;
const MO_DELAY_MS = 80;
const ENQUIRE_LINK_DELAY_MS = 200;
// Destinations whose submits are refused: the last three digits are the command_status
// (000: no answer at all).
const REFUSE = /^4915100000(\d{3})$/;
// The customer's answers to a message from a number: [data_coding, text].
const MO_REPLIES = [
  [0x00, 'STOPP, danke Jörg! 5€'],
  [0x08, 'СТОП 🙏'],
];

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const hex = (buf) => (Buffer.isBuffer(buf) ? buf.toString('hex') : null);

// node-smpp decodes short_message and message_payload into text by data_coding and drops the
// bytes; keep them beside the text so the test can check the bytes themselves.
function keepRawBytes(filter) {
  const decode = filter.decode;
  filter.decode = function (value, skipUdh) {
    const decoded = decode.call(this, value, skipUdh);
    if (Buffer.isBuffer(value) && decoded && typeof decoded === 'object') {
      decoded.raw = value;
    }
    return decoded;
  };
}
keepRawBytes(smpp.commands.submit_sm.params.short_message.filter);
if (smpp.tlvs.message_payload.filter !== smpp.commands.submit_sm.params.short_message.filter) {
  keepRawBytes(smpp.tlvs.message_payload.filter);
}

let nextId = FIRST_ID;
let receipts = 0;
let binds = 0;

let port = 0;
let END_FIRST_SESSION_AFTER_MS = null;
for (let args = process.argv.slice(2); args.length; ) {
  const arg = args.shift();
  if (arg === '--end-first-session-after') {
    END_FIRST_SESSION_AFTER_MS = Number(args.shift());
  } else {
    port = Number(arg);
  }
}

function onBind(session, pdu) {
  let status = smpp.ESME_ROK;
  if (pdu.command !== 'bind_transceiver' || pdu.system_id !== SYSTEM_ID) {
    status = smpp.ESME_RBINDFAIL;
  } else if (pdu.password !== PASSWORD) {
    status = smpp.ESME_RINVPASWD;
  }
  out({
    command: pdu.command,
    system_id: pdu.system_id,
    password_ok: pdu.password === PASSWORD,
    system_type: pdu.system_type,
    interface_version: pdu.interface_version,
    addr_ton: pdu.addr_ton,
    addr_npi: pdu.addr_npi,
    address_range: pdu.address_range,
    status,
  });
  session.send(pdu.response({ command_status: status, system_id: 'node-smsc' }));
  if (status === smpp.ESME_ROK) {
    session.bound = true;
    setTimeout(() => {
      session.enquire_link({}, (resp) =>
        out({
          command: 'enquire_link_resp',
          sequence_number: resp.sequence_number,
          status: resp.command_status,
        })
      );
      out({ command: 'enquire_link', from: 'smsc' });
    }, ENQUIRE_LINK_DELAY_MS);
    if (binds++ === 0 && END_FIRST_SESSION_AFTER_MS !== null) {
      setTimeout(() => {
        session.unbind({}, (resp) => {
          out({
            command: 'unbind_resp',
            sequence_number: resp.sequence_number,
            status: resp.command_status,
          });
          session.close();
        });
        out({ command: 'unbind', from: 'smsc' });
      }, END_FIRST_SESSION_AFTER_MS);
    }
  } else {
    // A refused bind ends the session, as SMSCs do.
    setTimeout(() => session.close(), 20);
  }
}

function onSubmit(session, pdu) {
  if (!session.bound) {
    out({ command: 'submit_sm', status: smpp.ESME_RINVBNDSTS });
    session.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS }));
    return;
  }
  const refuse = REFUSE.exec(pdu.destination_addr || '');
  const refusal = refuse ? Number(refuse[1]) : 0;
  const silent = refuse !== null && refusal === 0;
  const n = refuse ? null : nextId++;
  const messageId = refuse ? null : n.toString(16).toUpperCase().padStart(8, '0');
  const key = pdu[KEY_TLV];
  const sm = pdu.short_message || {};
  const payload = pdu.message_payload;
  out({
    command: 'submit_sm',
    sequence_number: pdu.sequence_number,
    service_type: pdu.service_type,
    source_addr: pdu.source_addr,
    source_addr_ton: pdu.source_addr_ton,
    source_addr_npi: pdu.source_addr_npi,
    destination_addr: pdu.destination_addr,
    dest_addr_ton: pdu.dest_addr_ton,
    dest_addr_npi: pdu.dest_addr_npi,
    esm_class: pdu.esm_class,
    protocol_id: pdu.protocol_id,
    priority_flag: pdu.priority_flag,
    schedule_delivery_time: pdu.schedule_delivery_time || '',
    validity_period: pdu.validity_period || '',
    registered_delivery: pdu.registered_delivery,
    replace_if_present_flag: pdu.replace_if_present_flag,
    data_coding: pdu.data_coding,
    sm_default_msg_id: pdu.sm_default_msg_id,
    short_message_hex: hex(sm.raw) || '',
    // node-smpp's own reading of the text (its GSM 03.38 and UTF-16BE decoders).
    short_message_text: typeof sm.message === 'string' ? sm.message : null,
    message_payload_hex: payload ? hex(payload.raw) : null,
    message_payload_text: payload && typeof payload.message === 'string' ? payload.message : null,
    key: Buffer.isBuffer(key) ? key.toString('utf8') : null,
    message_id: messageId,
    status: silent ? null : refusal,
  });
  if (silent) {
    return;
  }
  if (refusal) {
    session.send(pdu.response({ command_status: refusal }));
    return;
  }
  session.send(pdu.response({ message_id: messageId }));

  if (pdu.registered_delivery & 0x01) {
    const withTlvs = receipts++ % 2 === 0;
    setTimeout(() => sendReceipt(session, pdu, n, withTlvs), RECEIPT_DELAY_MS);
  }
  if (pdu.source_addr_ton === 1) {
    setTimeout(() => MO_REPLIES.forEach(([dc, text]) => sendMo(session, pdu, dc, text)), MO_DELAY_MS);
  }
}

// A message from the customer to the number that wrote to them; node-smpp encodes the text.
function sendMo(session, submit, dataCoding, text) {
  const pdu = new smpp.PDU('deliver_sm', {
    source_addr_ton: submit.dest_addr_ton,
    source_addr_npi: submit.dest_addr_npi,
    source_addr: submit.destination_addr,
    dest_addr_ton: submit.source_addr_ton,
    dest_addr_npi: submit.source_addr_npi,
    destination_addr: submit.source_addr,
    esm_class: 0,
    data_coding: dataCoding,
    short_message: text,
  });
  const sent = session.send(pdu, (resp) =>
    out({
      command: 'deliver_sm_resp',
      sequence_number: resp.sequence_number,
      message_id: resp.message_id,
      status: resp.command_status,
    })
  );
  out({
    command: 'deliver_sm',
    mo: true,
    sequence_number: pdu.sequence_number,
    data_coding: pdu.data_coding,
    short_message_hex: hex(pdu.short_message), // encoded by send()
    text,
    sent,
  });
}

function sendReceipt(session, submit, n, withTlvs) {
  const decimal = n.toString(10);
  const text =
    `id:${decimal} sub:001 dlvrd:001 submit date:2611261530 ` +
    'done date:2611261531 stat:DELIVRD err:000 text:';
  const options = {
    source_addr_ton: submit.dest_addr_ton,
    source_addr_npi: submit.dest_addr_npi,
    source_addr: submit.destination_addr,
    dest_addr_ton: submit.source_addr_ton,
    dest_addr_npi: submit.source_addr_npi,
    destination_addr: submit.source_addr,
    esm_class: 0x04,
    data_coding: 0,
    // Bytes, not a string: node-smpp would otherwise GSM-encode it, and receipts are ASCII.
    short_message: Buffer.from(text, 'ascii'),
  };
  if (withTlvs) {
    options.receipted_message_id = decimal;
    options.message_state = 2;
  }
  const pdu = new smpp.PDU('deliver_sm', options);
  const sent = session.send(pdu, (resp) =>
    out({
      command: 'deliver_sm_resp',
      sequence_number: resp.sequence_number,
      message_id: resp.message_id,
      status: resp.command_status,
    })
  );
  out({
    command: 'deliver_sm',
    sequence_number: pdu.sequence_number,
    receipted_message_id: withTlvs ? decimal : null,
    message_state: withTlvs ? 2 : null,
    text,
    for_message_id: n.toString(16).toUpperCase().padStart(8, '0'),
    sent,
  });
}

const server = smpp.createServer((session) => {
  session.bound = false;
  out({ event: 'connect' });
  session.on('pdu', (pdu) => {
    switch (pdu.command) {
      case 'bind_transceiver':
      case 'bind_transmitter':
      case 'bind_receiver':
        onBind(session, pdu);
        break;
      case 'submit_sm':
        onSubmit(session, pdu);
        break;
      case 'enquire_link':
        out({ command: 'enquire_link', sequence_number: pdu.sequence_number });
        session.send(pdu.response());
        break;
      case 'unbind':
        out({ command: 'unbind', sequence_number: pdu.sequence_number });
        session.send(pdu.response());
        setTimeout(() => session.close(), 20);
        break;
      case 'deliver_sm_resp':
      case 'enquire_link_resp':
      case 'unbind_resp':
        // Printed by the callbacks of the requests they answer.
        break;
      default:
        out({
          command: pdu.command,
          command_id: pdu.command_id,
          command_status: pdu.command_status,
          sequence_number: pdu.sequence_number,
        });
        if (!pdu.isResponse()) {
          session.send(pdu.response({ command_status: smpp.ESME_RINVCMDID }));
        }
    }
  });
  session.on('close', () => out({ event: 'close', bound: session.bound }));
  session.on('error', (e) => out({ event: 'error', error: String(e && e.message) }));
});

server.listen(port, '127.0.0.1', () => out({ port: server.address().port }));

// The test holds our stdin open; when it closes (the test ended, or died), so do we.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
