// What the browser keeps when the user chose "keep this browser approved": one IndexedDB
// database of this origin, "pttd-e2ee", one object store "state" with (at most) three records:
//   "identity"  {seed: Uint8Array(32), generation: number, created: number}
//   "authority" {key: "<base64url Ed25519 public key>", pinned: number}
//   "floors"    {rooms: {"<room>": <highest epoch accepted>}}
// Nothing is written when the user did not choose to keep the browser approved.

const DB_NAME = "pttd-e2ee";
const STORE = "state";

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error || new Error("IndexedDB request failed"));
  });
}

let opening = null;

function open() {
  if (!opening) {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    opening = request(req).then(
      (db) => {
        db.onversionchange = () => {
          db.close();
          opening = null;
        };
        return db;
      },
      (err) => {
        opening = null;
        throw new Error(`this browser cannot keep keys (IndexedDB: ${err.message || err})`);
      },
    );
  }
  return opening;
}

/** Run `fn(store)` in one transaction ("readonly" or "readwrite"); resolves with what `fn`'s
 *  last request gave once the transaction has committed. */
export async function transact(mode, fn) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    let result;
    tx.oncomplete = () => resolve(result);
    tx.onabort = tx.onerror = () => reject(tx.error || new Error("IndexedDB transaction failed"));
    Promise.resolve(fn(tx.objectStore(STORE), (value) => (result = value))).catch((err) => {
      try {
        tx.abort();
      } catch {
        // already finished
      }
      reject(err);
    });
  });
}

export function get(store, key) {
  return request(store.get(key));
}

/** Whether the database exists at all (asked without creating it). */
export async function exists() {
  if (typeof indexedDB.databases !== "function") return true; // cannot tell: open it
  return (await indexedDB.databases()).some((d) => d.name === DB_NAME);
}

/** The record `key`; undefined when there is none (the database is not created to say so). */
export async function read(key) {
  if (!opening && !(await exists())) return undefined;
  return transact("readonly", async (store, done) => done(await get(store, key)));
}

export async function write(key, value) {
  return transact("readwrite", (store) => {
    store.put(value, key);
  });
}

/** Everything gone: the database is deleted. */
export async function clear() {
  if (opening) {
    const db = await opening.catch(() => null);
    if (db) db.close();
    opening = null;
  }
  await request(indexedDB.deleteDatabase(DB_NAME)).catch(() => undefined);
}
