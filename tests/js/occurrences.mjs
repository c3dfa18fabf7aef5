// Every occurrence of every event in an iCalendar file as Mozilla's ical.js reads it: start,
// end and the instants of its alarms (UTC, whole seconds), for starts within the windows.
// usage: node occurrences.mjs FILE.ics '[["START_ISO","END_ISO"], ...]'   (ENDs exclusive)
// Alarms: an absolute TRIGGER is its instant; a relative one is added to the occurrence's
// start with ical.js's own arithmetic (Time.addDuration, on the start's wall clock), as a
// client built on ical.js computes it.
import { readFileSync } from "node:fs";
import ICAL from "ical.js";

const [file, windowsJson] = process.argv.slice(2);
if (!file || !windowsJson) {
  console.error("usage: node occurrences.mjs FILE.ics WINDOWS_JSON");
  process.exit(2);
}
const windows = JSON.parse(windowsJson).map(([a, b]) => [Date.parse(a) / 1000, Date.parse(b) / 1000]);
const last = Math.max(...windows.map(([, b]) => b));
const inside = (s) => windows.some(([a, b]) => s >= a && s < b);
const root = new ICAL.Component(ICAL.parse(readFileSync(file, "utf8")));
for (const vtz of root.getAllSubcomponents("vtimezone")) {
  ICAL.TimezoneService.register(new ICAL.Timezone(vtz));
}
const iso = (seconds) => new Date(seconds * 1000).toISOString().replace(".000Z", "Z");

function alarms(component, start) {
  const out = [];
  for (const valarm of component.getAllSubcomponents("valarm")) {
    const trigger = valarm.getFirstPropertyValue("trigger");
    if (trigger instanceof ICAL.Time) {
      out.push(iso(trigger.toUnixTime()));
    } else {
      const t = start.clone();
      t.addDuration(trigger);
      out.push(iso(t.toUnixTime()));
    }
  }
  return out.sort();
}

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
  const seen = [];
  out[uid] = seen;
  if (master.getFirstPropertyValue("status") === "CANCELLED") continue;
  // Given its own exceptions: without them, ICAL.Event relates every RECURRENCE-ID in the
  // calendar, whatever its UID.
  const event = new ICAL.Event(master, { strictExceptions: true, exceptions });
  const add = (details) => {
    const s = details.startDate.toUnixTime();
    if (inside(s)) {
      seen.push([iso(s), iso(details.endDate.toUnixTime()),
                 alarms(details.item.component, details.startDate)]);
    }
  };
  if (!event.isRecurring()) {
    add({ startDate: event.startDate, endDate: event.endDate, item: event });
    continue;
  }
  const it = event.iterator();
  for (let next; (next = it.next()); ) {
    // moved occurrences may start a few days before their original: scan a little past
    if (next.toUnixTime() >= last + 86400 * 8) break;
    add(event.getOccurrenceDetails(next));
  }
  seen.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}
process.stdout.write(JSON.stringify(out));
