// What the browser keeps when a user chose "keep this browser approved": one IndexedDB database
// of this origin per user name, "pttd-e2ee user:<name>", one object store "state" with (at most)
// three records:
//   "identity"  {user: "<name>", seed: Uint8Array(32), generation: number, created: number}
//   "authority" {key: "<base64url Ed25519 public key>", pinned: number}
//   "floors"    {rooms: {"<room>": <highest epoch accepted>}}
// A user's records are read, written and deleted only through that user's store (userStore):
// one user's login never sees, takes or deletes another's kept key. Nothing is written for a
// user who did not choose to keep the browser approved.
//
// Before the records were per user there was one database, "pttd-e2ee", whose identity was
// used by whoever logged in; it names no user, so it is deleted unread (dropUnbound).

const DB_PREFIX = "pttd-e2ee user:";
const UNBOUND_DB = "pttd-e2ee";
const STORE = "state";

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error || new Error("IndexedDB request failed"));
  });
}

export function get(store, key) {
  return request(store.get(key));
}

/** The database name of `user`'s kept state (exported for the tests). */
export function databaseName(user) {
  if (typeof user !== "string" || !user) throw new Error("a kept identity belongs to a user: name one");
  return DB_PREFIX + user;
}

async function exists(name) {
  if (typeof indexedDB.databases !== "function") return true; // cannot tell: open it
  return (await indexedDB.databases()).some((d) => d.name === name);
}

const stores = new Map(); // database name -> UserStore

/** The kept state of `user` (a non-empty string): {transact, read, write, clear}. */
export function userStore(user) {
  const name = databaseName(user);
  let store = stores.get(name);
  if (!store) {
    store = new UserStore(name);
    stores.set(name, store);
  }
  return store;
}

class UserStore {
  constructor(name) {
    this.name = name;
    this.opening = null;
  }

  _open() {
    if (!this.opening) {
      const req = indexedDB.open(this.name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE);
      this.opening = request(req).then(
        (db) => {
          db.onversionchange = () => {
            db.close();
            this.opening = null;
          };
          return db;
        },
        (err) => {
          this.opening = null;
          throw new Error(`this browser cannot keep keys (IndexedDB: ${err.message || err})`);
        },
      );
    }
    return this.opening;
  }

  /** Run `fn(store, done)` in one transaction ("readonly" or "readwrite"); resolves with what
   *  was passed to `done` once the transaction has committed. */
  async transact(mode, fn) {
    const db = await this._open();
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

  /** The record `key`; undefined when there is none (the database is not created to say so). */
  async read(key) {
    if (!this.opening && !(await exists(this.name))) return undefined;
    return this.transact("readonly", async (store, done) => done(await get(store, key)));
  }

  async write(key, value) {
    return this.transact("readwrite", (store) => {
      store.put(value, key);
    });
  }

  /** Everything of this user gone: the database is deleted (no other user's is touched). */
  async clear() {
    if (this.opening) {
      const db = await this.opening.catch(() => null);
      if (db) db.close();
      this.opening = null;
    }
    await request(indexedDB.deleteDatabase(this.name)).catch(() => undefined);
  }
}

let unboundDropped = null;

/** Delete the database of before the records were per user (once per page), unread. */
export function dropUnbound() {
  if (!unboundDropped) {
    unboundDropped = (async () => {
      if (await exists(UNBOUND_DB)) await request(indexedDB.deleteDatabase(UNBOUND_DB));
    })().catch(() => undefined);
  }
  return unboundDropped;
}
