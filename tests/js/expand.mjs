// Expand an iCalendar file with Mozilla's ical.js and print each UID's start instants (UTC).
// usage: node expand.mjs FILE.ics START_ISO END_ISO   (END exclusive)
import { readFileSync } from "node:fs";
import ICAL from "ical.js";

const [file, startIso, endIso] = process.argv.slice(2);
if (!file || !startIso || !endIso) {
  console.error("usage: node expand.mjs FILE.ics START_ISO END_ISO");
  process.exit(2);
}
const lo = Date.parse(startIso);
const hi = Date.parse(endIso);
const root = new ICAL.Component(ICAL.parse(readFileSync(file, "utf8")));
for (const vtz of root.getAllSubcomponents("vtimezone")) {
  ICAL.TimezoneService.register(new ICAL.Timezone(vtz));
}
const iso = (t) => new Date(t.toUnixTime() * 1000).toISOString().replace(".000Z", "Z");
const byUid = new Map();
for (const vevent of root.getAllSubcomponents("vevent")) {
  const uid = vevent.getFirstPropertyValue("uid");
  if (!byUid.has(uid)) byUid.set(uid, { master: null, exceptions: [] });
  const entry = byUid.get(uid);
  if (vevent.hasProperty("recurrence-id")) entry.exceptions.push(vevent);
  else entry.master = vevent;
}
const out = {};
for (const [uid, { master, exceptions }] of byUid) {
  if (!master) continue;
  const event = new ICAL.Event(master);
  for (const ex of exceptions) event.relateException(ex);
  const starts = [];
  if (master.getFirstPropertyValue("status") === "CANCELLED") {
    out[uid] = starts;
    continue;
  }
  if (!event.isRecurring()) {
    const t = event.startDate;
    const ms = t.toUnixTime() * 1000;
    if (ms >= lo && ms < hi) starts.push(t.isDate ? t.toString() : iso(t));
  } else {
    const it = event.iterator();
    for (let i = 0, next; (next = it.next()) && i < 20000; i++) {
      const details = event.getOccurrenceDetails(next);
      const t = details.startDate;
      const ms = t.toUnixTime() * 1000;
      // moved occurrences may start before their original; scan a day past the window
      if (next.toUnixTime() * 1000 >= hi + 86400000 * 2) break;
      if (ms >= lo && ms < hi) starts.push(t.isDate ? t.toString() : iso(t));
    }
  }
  out[uid] = starts.sort();
}
process.stdout.write(JSON.stringify(out));
