// The service worker: the whole site (page, engine, model) is cached at install, and served
// from that cache, so after one visit the app opens and generates with the network off.
// `toolkit web` writes the two lines below: the site's files and their sha256 (toolkit/web/pwa.py).
// A new model changes the version, so the browser installs this worker again: it caches the
// new files, then deletes the old cache and tells open pages once ("updated").

const VERSION = "dev";
const FILES = [];

const PREFIX = "char-lstm-toolkit-";
const CACHE = PREFIX + VERSION;

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      // cache: "reload": straight from the server, not from an HTTP cache holding old files.
      await cache.addAll(FILES.map((file) => new Request(file, { cache: "reload" })));
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      const old = (await caches.keys()).filter((key) => key.startsWith(PREFIX) && key !== CACHE);
      await Promise.all(old.map((key) => caches.delete(key)));
      await self.clients.claim();
      if (old.length === 0) return; // a first install: nothing was updated
      for (const client of await self.clients.matchAll({ type: "window" })) {
        client.postMessage({ type: "updated", version: VERSION });
      }
    })(),
  );
});

self.addEventListener("fetch", (event) => {
  if (event.request.method !== "GET") return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      // ignoreSearch: the page's ?variant=... is the same page.
      const hit = await cache.match(event.request, { ignoreSearch: true });
      return hit ?? fetch(event.request);
    })(),
  );
});
