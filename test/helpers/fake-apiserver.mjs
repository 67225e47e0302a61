// A FAKE Kubernetes API server: no real apiserver can run here. It knows just enough to be a
// target for server-side apply (discovery for v1 and apps/v1, PATCH with
// application/apply-patch+yaml) and to report DaemonSet rollout status, and to keep ConfigMaps and
// coordination.k8s.io/v1 Leases read and replaced whole: GET, POST (409 when the name exists) and
// PUT (409 when metadata.resourceVersion is not the stored one), as the real one does for the site
// state's compare-and-swap. Every request is appended to a JSONL record file so tests can check
// exactly what ferry sent. With FAKE_API_STORE set, what it holds outlives it in that file, as a
// cluster outlives one ferry run.
//   node fake-apiserver.mjs PORTFILE RECORDFILE [never-ready|ready] [PORT]
import { randomUUID } from 'node:crypto';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';

const [portFile, recordFile, mode, port] = process.argv.slice(2);
const persisted = process.env.FAKE_API_STORE;
const saved = (() => {
  try {
    return JSON.parse(readFileSync(persisted, 'utf8'));
  } catch {
    return { revision: 100, objects: [] };
  }
})();
const store = new Map(saved.objects);
// One counter for every write, as etcd's revision.
let revision = saved.revision;
const stamp = (obj) => {
  obj.metadata = { ...obj.metadata, resourceVersion: String(++revision) };
  if (persisted) queueMicrotask(() => writeFileSync(persisted, JSON.stringify({ revision, objects: [...store.entries()] })));
  return obj;
};
const resources = {
  '/api/v1': { groupVersion: 'v1', resources: [
    { name: 'namespaces', namespaced: false, kind: 'Namespace', verbs: ['get', 'create', 'patch'] },
    { name: 'configmaps', namespaced: true, kind: 'ConfigMap', verbs: ['get', 'create', 'update', 'patch'] },
    { name: 'serviceaccounts', namespaced: true, kind: 'ServiceAccount', verbs: ['get', 'patch'] },
    { name: 'nodes', namespaced: false, kind: 'Node', verbs: ['get', 'list', 'patch'] },
  ] },
  '/apis/coordination.k8s.io/v1': { groupVersion: 'coordination.k8s.io/v1', resources: [
    { name: 'leases', namespaced: true, kind: 'Lease', verbs: ['get', 'create', 'update'] },
  ] },
  '/apis/apps/v1': { groupVersion: 'apps/v1', resources: [
    { name: 'daemonsets', namespaced: true, kind: 'DaemonSet', verbs: ['get', 'list', 'patch'] },
    { name: 'deployments', namespaced: true, kind: 'Deployment', verbs: ['get', 'list', 'patch'] },
  ] },
};

const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => (body += d));
  req.on('end', () => {
    const url = new URL(req.url, 'http://x');
    appendFileSync(recordFile, `${JSON.stringify({ method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), contentType: req.headers['content-type'], body })}\n`);
    const send = (code, obj) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    if (req.method === 'GET' && resources[url.pathname]) return send(200, { kind: 'APIResourceList', ...resources[url.pathname] });
    if (req.method === 'PATCH') {
      if (req.headers['content-type'] !== 'application/apply-patch+yaml') return send(415, { kind: 'Status', status: 'Failure', message: 'only server-side apply here', code: 415 });
      const obj = JSON.parse(body);
      obj.metadata = { ...obj.metadata, generation: 1, uid: 'fake' };
      store.set(url.pathname, stamp(obj));
      return send(200, obj);
    }
    // Objects written whole (the site state's ConfigMap, the operation Lease).
    const whole = /^(\/api\/v1|\/apis\/coordination\.k8s\.io\/v1)(?:\/namespaces\/[^/]+\/(configmaps|leases)|\/(namespaces))(\/[^/]+)?$/.exec(url.pathname);
    if (whole && req.method === 'POST' && !whole[4]) {
      const obj = JSON.parse(body);
      const at = `${url.pathname}/${obj.metadata.name}`;
      if (store.has(at)) return send(409, { kind: 'Status', status: 'Failure', reason: 'AlreadyExists', code: 409, message: `${obj.metadata.name} already exists` });
      obj.metadata.uid = randomUUID();
      store.set(at, stamp(obj));
      return send(201, store.get(at));
    }
    if (whole && req.method === 'PUT' && whole[4]) {
      const obj = JSON.parse(body);
      const cur = store.get(url.pathname);
      if (!cur) return send(404, { kind: 'Status', status: 'Failure', reason: 'NotFound', code: 404, message: `${url.pathname} not found` });
      if (obj.metadata?.resourceVersion !== cur.metadata.resourceVersion) {
        return send(409, { kind: 'Status', status: 'Failure', reason: 'Conflict', code: 409, message: 'Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again' });
      }
      obj.metadata.uid = cur.metadata.uid;
      store.set(url.pathname, stamp(obj));
      return send(200, store.get(url.pathname));
    }
    // The node list: the nodes applied (the CNI's node objects), each Ready unless never-ready.
    if (req.method === 'GET' && url.pathname === '/api/v1/nodes') {
      const items = [...store.entries()].filter(([k]) => k.startsWith('/api/v1/nodes/')).map(([, o]) => ({ ...structuredClone(o), status: { conditions: [{ type: 'Ready', status: mode === 'never-ready' ? 'False' : 'True' }] } }));
      return send(200, { apiVersion: 'v1', kind: 'NodeList', metadata: {}, items });
    }
    // The node kubeadm init registered (the kubeadm stand-in registers none): Ready unless never-ready.
    const node = /^\/api\/v1\/nodes\/([^/]+)$/.exec(url.pathname);
    if (req.method === 'GET' && node && !store.has(url.pathname)) {
      return send(200, { apiVersion: 'v1', kind: 'Node', metadata: { name: node[1] }, status: { conditions: [{ type: 'Ready', status: mode === 'never-ready' ? 'False' : 'True' }] } });
    }
    if (req.method === 'GET' && store.has(url.pathname)) {
      const obj = structuredClone(store.get(url.pathname));
      if (obj.kind === 'Node') obj.status = { conditions: [{ type: 'Ready', status: mode === 'never-ready' ? 'False' : 'True' }] };
      if (obj.kind === 'DaemonSet') {
        const n = obj.metadata.name === 'ferry-lb' ? 0 : 1;
        obj.status = mode === 'never-ready'
          ? { desiredNumberScheduled: 1, numberReady: 0, updatedNumberScheduled: 0, observedGeneration: 1 }
          : { desiredNumberScheduled: n, numberReady: n, updatedNumberScheduled: n, observedGeneration: 1 };
      }
      return send(200, obj);
    }
    // A list of a collection ferry reads (the DaemonSets a CNI chart made): whatever was applied under it.
    if (req.method === 'GET' && /\/(daemonsets|deployments)$/.test(url.pathname)) {
      const items = [...store.entries()].filter(([k]) => k.startsWith(`${url.pathname}/`)).map(([, v]) => v);
      return send(200, { kind: url.pathname.endsWith('daemonsets') ? 'DaemonSetList' : 'DeploymentList', apiVersion: 'apps/v1', metadata: {}, items });
    }
    send(404, { kind: 'Status', status: 'Failure', reason: 'NotFound', code: 404, message: `${url.pathname} not found` });
  });
});
server.listen(Number(port ?? 0), '127.0.0.1', () => writeFileSync(portFile, String(server.address().port)));
process.on('SIGTERM', () => process.exit(0));
