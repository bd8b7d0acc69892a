// An SMSC simulator (SMPP 3.4 on npm's `smpp`) for the smpp and kannel providers' development,
// tests and benchmarks. Loopback only. docs/PROVIDERS.md describes it.
// Settings from the environment:
//   SMSC_PORT          SMPP port on 127.0.0.1                          (default 2775)
//   SMSC_CONTROL_PORT  HTTP control and stats port on 127.0.0.1        (default 2776)
//   SMSC_USERS         accounts, "system_id:password,..."              (default "mailing:secret")
//   SMSC_RECEIPT_DELAY_MS  from submit_sm to its receipt              (default 200)
// Control (JSON over HTTP):
//   GET  /stats            counts: binds, submits (parts), messages (complete), per second max, ...
//   GET  /messages         every message received: ids, parts, text, validity, receipt sent
//   POST /faults           merge into the fault switches (below); answers the switches now
//   POST /reset            faults off, messages and counts cleared (binds stay)
//   POST /drop-binds       {system_id?}: close the binds' sockets at once, without unbind
//   POST /mo               {system_id, from, to, text}: a reply from a phone (non-receipt deliver_sm)
//   POST /unknown-receipt  {system_id}: a receipt for a message id never issued
// Fault switches (POST /faults):
//   reject_numbers [..]      submit_sm to these get ESME_RINVDSTADR (permanent)
//   undeliverable_numbers [..]  their receipts say UNDELIV (message_state 5)
//   undelivered_ratio 0..1   that share of receipts say UNDELIV, at random
//   undelivered_ratio_by_account {system_id: 0..1}  the same, per account (two "providers")
//   throttle_next N          the next N submit_sm get ESME_RTHROTTLED
//   queue_full_next N        the next N submit_sm get ESME_RMSGQFUL
//   throttle_above_tps N     submit_sm beyond N in one second (per account) get ESME_RTHROTTLED
//   refuse_binds bool        binds get ESME_RBINDFAIL
//   receipt_before_response  the receipt goes out before the submit_sm_resp
//   duplicate_receipts       every receipt is sent twice
//   receipt_tlvs bool        receipted_message_id/message_state TLVs (default true; false: text only)
//   no_receipts bool         hold receipts (they go out once it is switched off)
//   receipt_delay_ms N       as SMSC_RECEIPT_DELAY_MS
//   response_delay_ms N      delay every submit_sm_resp
//   deliver_ack_timeout_ms N a deliver_sm without its deliver_sm_resp this long is sent again
// A message with a validity_period earlier than its delivery gets an EXPIRED receipt at that time.
import http from 'node:http';
import smpp from 'smpp';

const smppPort = Number(process.env.SMSC_PORT || 2775);
const controlPort = Number(process.env.SMSC_CONTROL_PORT || 2776);
const users = Object.fromEntries(
  (process.env.SMSC_USERS || 'mailing:secret').split(',').filter(Boolean).map((entry) => {
    const at = entry.indexOf(':');
    return [entry.slice(0, at), entry.slice(at + 1)];
  }),
);

const DEFAULT_FAULTS = () => ({
  reject_numbers: [],
  undeliverable_numbers: [],
  undelivered_ratio: 0,
  undelivered_ratio_by_account: {},
  throttle_next: 0,
  queue_full_next: 0,
  throttle_above_tps: 0,
  refuse_binds: false,
  receipt_before_response: false,
  duplicate_receipts: false,
  receipt_tlvs: true,
  no_receipts: false,
  receipt_delay_ms: Number(process.env.SMSC_RECEIPT_DELAY_MS || 200),
  response_delay_ms: 0,
  deliver_ack_timeout_ms: 10_000,
});
let faults = DEFAULT_FAULTS();

const ESME = {
  OK: 0x00,
  RINVBNDSTS: 0x04,
  RALYBND: 0x05,
  RINVDSTADR: 0x0b,
  RINVPASWD: 0x0e,
  RINVSYSID: 0x0f,
  RBINDFAIL: 0x0d,
  RMSGQFUL: 0x14,
  RTHROTTLED: 0x58,
};
const STATE = { DELIVERED: 2, EXPIRED: 3, UNDELIVERABLE: 5 };
const STAT_WORD = { 2: 'DELIVRD', 3: 'EXPIRED', 5: 'UNDELIV' };

let nextId = 1_000_000_000 + Math.floor(Math.random() * 1_000_000) * 1000;
let stats;
let messages; // id -> message (one per submit_sm, so one per part)
let assemblies; // "system_id|from|to|ref" -> {parts: Map(seq -> id), total}
let pendingReceipts; // system_id -> [pdu options] waiting for a receiving bind
let epoch = 0; // a reset drops the receipts still scheduled for the messages before it
function resetState() {
  epoch += 1;
  stats = {
    binds: 0,
    bind_failures: 0,
    unbinds: 0, // unbind requests from clients (a graceful close)
    submits: 0,
    messages: 0,
    parts: 0,
    multipart_messages: 0,
    rejected: 0,
    throttled: 0,
    receipts_sent: 0,
    receipts_acked: 0,
    deliver_timeouts: 0,
    max_in_flight: 0, // most submit_sm awaiting their response on one bind at once
    mo_sent: 0,
    per_second: {}, // unix second -> submit_sm accepted
    max_per_second: 0,
  };
  messages = new Map();
  assemblies = new Map();
  pendingReceipts = new Map();
}
resetState();
const secondCounts = new Map(); // "system_id|second" -> submit_sm seen (for throttle_above_tps)
const sessions = new Set();

function smppTime(date) {
  const p = (n) => String(n).padStart(2, '0');
  return `${p(date.getUTCFullYear() % 100)}${p(date.getUTCMonth() + 1)}${p(date.getUTCDate())}`
    + `${p(date.getUTCHours())}${p(date.getUTCMinutes())}`;
}

function receivers(systemId) {
  return [...sessions].filter((s) => s.bound && s.systemId === systemId && s.mode !== 'transmitter');
}

function sendToAccount(systemId, options, onAck, since = epoch) {
  if (since !== epoch) return; // from before a reset
  const candidates = receivers(systemId);
  if (!candidates.length) {
    if (!pendingReceipts.has(systemId)) pendingReceipts.set(systemId, []);
    pendingReceipts.get(systemId).push({ options, onAck });
    return;
  }
  // Any bind of the account, as real SMSCs do.
  const session = candidates[Math.floor(Math.random() * candidates.length)];
  const pdu = new smpp.PDU('deliver_sm', { ...options });
  const sent = session.send(pdu, (resp) => {
    session.outstanding.delete(pdu.sequence_number);
    if (resp.command_status === ESME.OK) {
      if (onAck) onAck();
    } else {
      setTimeout(() => sendToAccount(systemId, options, onAck, since), 500);
    }
  });
  if (!sent) {
    session.bound = false;
    sendToAccount(systemId, options, onAck, since);
    return;
  }
  // Not acknowledged when the bind goes, or in time: sent again on another (or the next) bind.
  session.outstanding.set(pdu.sequence_number, { options, onAck, since });
  setTimeout(() => {
    if (session.outstanding.delete(pdu.sequence_number)) {
      stats.deliver_timeouts += 1;
      sendToAccount(systemId, options, onAck, since);
    }
  }, faults.deliver_ack_timeout_ms);
}

function flushPending(systemId) {
  const queued = pendingReceipts.get(systemId) || [];
  pendingReceipts.delete(systemId);
  for (const { options, onAck } of queued) sendToAccount(systemId, options, onAck);
}

function receiptOptions(message, state, messageId = message.id) {
  const now = new Date();
  const stat = STAT_WORD[state];
  const err = state === STATE.DELIVERED ? '000' : state === STATE.EXPIRED ? '000' : '001';
  const text = `id:${messageId} sub:001 dlvrd:${state === STATE.DELIVERED ? '001' : '000'} `
    + `submit date:${smppTime(message.received_at)} done date:${smppTime(now)} `
    + `stat:${stat} err:${err} text:${(message.text || '').slice(0, 20).replace(/[^\x20-\x7e]/g, '.')}`;
  const options = {
    source_addr_ton: message.dest_addr_ton,
    source_addr_npi: message.dest_addr_npi,
    source_addr: message.to,
    dest_addr_ton: message.source_addr_ton,
    dest_addr_npi: message.source_addr_npi,
    destination_addr: message.from,
    esm_class: smpp.ESM_CLASS.MC_DELIVERY_RECEIPT,
    data_coding: 0,
    short_message: Buffer.from(text, 'ascii'),
  };
  if (faults.receipt_tlvs) {
    options.receipted_message_id = messageId;
    options.message_state = state;
  }
  return options;
}

function sendReceipt(message, expired = false) {
  if (message.epoch !== epoch) return;
  if (faults.no_receipts) {
    // Held: checked again until the switch goes off.
    setTimeout(() => sendReceipt(message, expired), 100);
    return;
  }
  const now = Date.now();
  let state = STATE.DELIVERED;
  if (expired || (message.validity && message.validity.getTime() < now)) state = STATE.EXPIRED;
  else if (faults.undeliverable_numbers.includes(message.to)) state = STATE.UNDELIVERABLE;
  else if (Math.random() < (faults.undelivered_ratio_by_account[message.system_id] ?? faults.undelivered_ratio)) {
    state = STATE.UNDELIVERABLE;
  }
  message.receipt = STAT_WORD[state];
  const copies = faults.duplicate_receipts ? 2 : 1;
  for (let i = 0; i < copies; i += 1) {
    stats.receipts_sent += 1;
    sendToAccount(message.system_id, receiptOptions(message, state), () => { stats.receipts_acked += 1; });
  }
}

function scheduleReceipt(message) {
  const due = message.received_at.getTime() + faults.receipt_delay_ms;
  // Past its validity the SMSC stops trying: the receipt says EXPIRED, at the validity's end.
  const expires = message.validity !== null && message.validity.getTime() < due;
  const at = expires ? message.validity.getTime() : due;
  // (A timer may fire a millisecond early: the EXPIRED decision is made here, not then.)
  setTimeout(() => sendReceipt(message, expires), Math.max(0, at - Date.now()));
}

function decodeText(pdu) {
  const body = pdu.message_payload || pdu.short_message;
  if (!body) return { text: '', udh: [] };
  if (Buffer.isBuffer(body)) return { text: body.toString('latin1'), udh: [] };
  const message = body.message;
  return {
    text: Buffer.isBuffer(message) ? message.toString('latin1') : String(message ?? ''),
    udh: body.udh || [],
  };
}

function concatenation(udh) {
  for (const ie of udh) {
    if (ie[0] === 0x00 && ie.length >= 5) return { ref: ie[2], total: ie[3], seq: ie[4] };
    if (ie[0] === 0x08 && ie.length >= 6) return { ref: ie.readUInt16BE(2), total: ie[4], seq: ie[5] };
  }
  return null;
}

function countSecond(systemId) {
  const second = Math.floor(Date.now() / 1000);
  const key = `${systemId}|${second}`;
  const count = (secondCounts.get(key) || 0) + 1;
  secondCounts.set(key, count);
  if (secondCounts.size > 1000) {
    for (const k of secondCounts.keys()) if (Number(k.split('|')[1]) < second - 5) secondCounts.delete(k);
  }
  return count;
}

function onSubmit(session, pdu) {
  if (!session.bound || session.mode === 'receiver') {
    session.send(pdu.response({ command_status: ESME.RINVBNDSTS }));
    return;
  }
  const inSecond = countSecond(session.systemId);
  const refuse = (status) => {
    if (status === ESME.RTHROTTLED || status === ESME.RMSGQFUL) stats.throttled += 1;
    else stats.rejected += 1;
    session.send(pdu.response({ command_status: status }));
  };
  if (faults.throttle_next > 0) { faults.throttle_next -= 1; refuse(ESME.RTHROTTLED); return; }
  if (faults.queue_full_next > 0) { faults.queue_full_next -= 1; refuse(ESME.RMSGQFUL); return; }
  if (faults.throttle_above_tps > 0 && inSecond > faults.throttle_above_tps) { refuse(ESME.RTHROTTLED); return; }
  if (faults.reject_numbers.includes(pdu.destination_addr)) { refuse(ESME.RINVDSTADR); return; }

  const id = String(nextId += 1);
  const { text, udh } = decodeText(pdu);
  const part = concatenation(udh);
  const validity = pdu.validity_period instanceof Date ? pdu.validity_period : null;
  const message = {
    id,
    system_id: session.systemId,
    from: pdu.source_addr,
    to: pdu.destination_addr,
    source_addr_ton: pdu.source_addr_ton,
    source_addr_npi: pdu.source_addr_npi,
    dest_addr_ton: pdu.dest_addr_ton,
    dest_addr_npi: pdu.dest_addr_npi,
    data_coding: pdu.data_coding,
    esm_class: pdu.esm_class,
    registered_delivery: pdu.registered_delivery,
    text,
    part,
    validity,
    received_at: new Date(),
    receipt: null,
    epoch,
  };
  messages.set(id, message);
  stats.submits += 1;
  stats.parts += 1;
  const second = Math.floor(Date.now() / 1000);
  stats.per_second[second] = (stats.per_second[second] || 0) + 1;
  stats.max_per_second = Math.max(stats.max_per_second, stats.per_second[second]);
  for (const key of Object.keys(stats.per_second)) if (Number(key) < second - 120) delete stats.per_second[key];
  if (part) {
    const key = `${session.systemId}|${message.from}|${message.to}|${part.ref}`;
    const assembly = assemblies.get(key) || { total: part.total, parts: new Map() };
    assembly.parts.set(part.seq, id);
    assemblies.set(key, assembly);
    if (assembly.parts.size === assembly.total) {
      stats.messages += 1;
      stats.multipart_messages += 1;
      assemblies.delete(key);
    }
  } else {
    stats.messages += 1;
  }
  const wantsReceipt = (pdu.registered_delivery & 0x03) !== 0;
  // submit_sm awaiting their response on this bind: the client's window, seen from here.
  session.inFlight = (session.inFlight || 0) + 1;
  stats.max_in_flight = Math.max(stats.max_in_flight, session.inFlight);
  const respond = () => {
    session.inFlight -= 1;
    session.send(pdu.response({ message_id: id }));
  };
  if (wantsReceipt && faults.receipt_before_response) {
    sendReceipt(message);
    setTimeout(respond, 50 + faults.response_delay_ms);
    return;
  }
  if (faults.response_delay_ms > 0) setTimeout(respond, faults.response_delay_ms);
  else respond();
  if (wantsReceipt) scheduleReceipt(message);
}

function onBind(session, pdu, mode) {
  const fail = (status) => {
    stats.bind_failures += 1;
    session.send(pdu.response({ command_status: status }), () => session.close());
  };
  if (session.bound) { session.send(pdu.response({ command_status: ESME.RALYBND })); return; }
  if (faults.refuse_binds) { fail(ESME.RBINDFAIL); return; }
  if (!(pdu.system_id in users)) { fail(ESME.RINVSYSID); return; }
  if (users[pdu.system_id] !== pdu.password) { fail(ESME.RINVPASWD); return; }
  session.bound = true;
  session.mode = mode;
  session.systemId = pdu.system_id;
  stats.binds += 1;
  session.send(pdu.response({ system_id: 'smsc-sim' }));
  if (mode !== 'transmitter') flushPending(session.systemId);
}

const server = smpp.createServer((session) => {
  sessions.add(session);
  session.outstanding = new Map();
  const gone = () => {
    if (!sessions.delete(session)) return;
    session.bound = false;
    const unacked = [...session.outstanding.values()];
    session.outstanding.clear();
    for (const { options, onAck, since } of unacked) sendToAccount(session.systemId, options, onAck, since);
  };
  session.on('close', gone);
  session.on('error', gone);
  session.on('bind_transceiver', (pdu) => onBind(session, pdu, 'transceiver'));
  session.on('bind_transmitter', (pdu) => onBind(session, pdu, 'transmitter'));
  session.on('bind_receiver', (pdu) => onBind(session, pdu, 'receiver'));
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    stats.unbinds += 1;
    session.bound = false;
    session.send(pdu.response(), () => session.close());
  });
  session.on('submit_sm', (pdu) => onSubmit(session, pdu));
  session.on('pdu', (pdu) => {
    if (!(pdu.command in { bind_transceiver: 1, bind_transmitter: 1, bind_receiver: 1, enquire_link: 1, unbind: 1, submit_sm: 1 })
        && !pdu.isResponse()) {
      session.send(pdu.response({ command_status: 0x03 })); // ESME_RINVCMDID
    }
  });
});

function readJson(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      try { resolve(body ? JSON.parse(body) : {}); } catch (e) { reject(e); }
    });
  });
}

function messageView(m) {
  return {
    id: m.id,
    system_id: m.system_id,
    from: m.from,
    to: m.to,
    text: m.text,
    data_coding: m.data_coding,
    esm_class: m.esm_class,
    registered_delivery: m.registered_delivery,
    part: m.part,
    validity: m.validity ? m.validity.toISOString() : null,
    received_at: m.received_at.toISOString(),
    receipt: m.receipt,
  };
}

const control = http.createServer(async (req, res) => {
  const answer = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  try {
    const url = new URL(req.url, 'http://localhost');
    if (req.method === 'GET' && url.pathname === '/stats') {
      const bound = [...sessions].filter((s) => s.bound);
      const byAccount = {};
      for (const s of bound) byAccount[s.systemId] = (byAccount[s.systemId] || 0) + 1;
      return answer(200, {
        ...stats,
        bound: bound.length,
        bound_by_account: byAccount,
        pending_receipts: [...pendingReceipts.values()].reduce((n, q) => n + q.length, 0),
      });
    }
    if (req.method === 'GET' && url.pathname === '/messages') {
      return answer(200, [...messages.values()].map(messageView));
    }
    if (req.method === 'POST' && url.pathname === '/faults') {
      const body = await readJson(req);
      for (const key of Object.keys(body)) {
        if (!(key in faults)) return answer(400, { error: `unknown fault ${key}` });
      }
      faults = { ...faults, ...body };
      return answer(200, faults);
    }
    if (req.method === 'POST' && url.pathname === '/reset') {
      faults = DEFAULT_FAULTS();
      resetState();
      return answer(200, faults);
    }
    if (req.method === 'POST' && url.pathname === '/drop-binds') {
      const body = await readJson(req);
      const chosen = [...sessions].filter((s) => !body.system_id || s.systemId === body.system_id);
      for (const session of chosen) session.destroy();
      return answer(200, { dropped: chosen.length });
    }
    if (req.method === 'POST' && url.pathname === '/mo') {
      const body = await readJson(req);
      const systemId = body.system_id || Object.keys(users)[0];
      const ucs2 = /[^\x00-\x7f]/.test(body.text || '');
      stats.mo_sent += 1;
      sendToAccount(systemId, {
        source_addr_ton: 1,
        source_addr_npi: 1,
        source_addr: body.from,
        destination_addr: body.to || 'MAILING',
        esm_class: 0,
        data_coding: ucs2 ? 8 : 0,
        short_message: ucs2 ? Buffer.from(body.text, 'utf16le').swap16() : Buffer.from(body.text || '', 'ascii'),
      });
      return answer(200, { queued: true });
    }
    if (req.method === 'POST' && url.pathname === '/unknown-receipt') {
      const body = await readJson(req);
      const systemId = body.system_id || Object.keys(users)[0];
      const fake = {
        id: 'unknown', text: '', from: 'MAILING', to: '79990000000', received_at: new Date(),
        source_addr_ton: 5, source_addr_npi: 0, dest_addr_ton: 1, dest_addr_npi: 1,
      };
      const id = body.id || String(nextId += 1);
      stats.receipts_sent += 1;
      sendToAccount(systemId, receiptOptions(fake, STATE.DELIVERED, id), () => { stats.receipts_acked += 1; });
      return answer(200, { id });
    }
    return answer(404, { error: 'not found' });
  } catch (error) {
    return answer(400, { error: String(error) });
  }
});

server.listen(smppPort, '127.0.0.1', () => {
  control.listen(controlPort, '127.0.0.1', () => {
    console.log(`smsc-sim: smpp 127.0.0.1:${smppPort}, control http://127.0.0.1:${controlPort}, `
      + `accounts ${Object.keys(users).join(', ')}`);
  });
});

const stop = () => {
  for (const session of [...sessions]) session.destroy();
  server.close();
  control.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
