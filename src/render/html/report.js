// flowtrace HTML report. Everything from the wire is set with textContent (or as SVG
// text nodes), never parsed as markup. Data: #ft-rows and #ft-meta (src/render/html.rs).
(function () {
  'use strict';
  var PAGE = 100;
  var SVGNS = 'http://www.w3.org/2000/svg';
  var rows = JSON.parse(document.getElementById('ft-rows').textContent);
  var meta = JSON.parse(document.getElementById('ft-meta').textContent);
  var STATUS = { c: 'complete', p: 'partial', f: 'failed' };
  var kept = {};
  meta.kept.forEach(function (k) { kept[k.id] = k; });
  var byId = new Map();

  // Search keys, computed once.
  var n = rows.length;
  var keyT = new Float64Array(n), keyD = new Float64Array(n), keyId = new Float64Array(n);
  var roleSet = new Set();
  for (var i = 0; i < n; i++) {
    var r = rows[i];
    byId.set(r.id, i);
    keyT[i] = r.t; keyD[i] = r.d; keyId[i] = r.id;
    var roles = '|', hosts = '|';
    for (var j = 0; j < r.h.length; j++) {
      var h = r.h[j];
      if (h.r) { roles += h.r + '|'; roleSet.add(h.r); }
      if (h.h) hosts += h.h + '|';
      if (h.n) hosts += h.n + '|';
      if (h.s) hosts += h.s + '|';
      if (h.c && h.p === undefined) hosts += h.c + '|';
    }
    if (r.v) hosts += r.v[0] + '|' + (r.v[1] || '') + '|';
    r._roles = roles;
    r._hosts = hosts.toLowerCase();
    r._uri = (r.u || '').toLowerCase();
    r._code = r.st === undefined ? '' : String(r.st);
  }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function svgEl(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function pad(x, w) { x = String(x); while (x.length < w) x = '0' + x; return x; }
  function fmtTs(t) {
    var d = new Date(t * 1000);
    var us = Math.round((t - Math.floor(t)) * 1e6);
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1, 2) + '-' + pad(d.getUTCDate(), 2) + ' ' +
      pad(d.getUTCHours(), 2) + ':' + pad(d.getUTCMinutes(), 2) + ':' + pad(d.getUTCSeconds(), 2) + '.' + pad(us, 6);
  }
  function fmtMs(x) { return x === undefined || x === null ? '-' : x.toFixed(3); }
  function chainText(r) {
    var out = [];
    for (var j = 0; j < r.h.length; j++) {
      var h = r.h[j];
      if (h.k !== 'n') out.push((h.r || '?') + '@' + (h.h || '?'));
    }
    return out.join(' \u2192 ');
  }
  function svgImage(text, alt) {
    var img = el('img', undefined, 'diagram');
    img.alt = alt;
    img.src = URL.createObjectURL(new Blob([text], { type: 'image/svg+xml' }));
    return img;
  }
  function pathLink(id) {
    var a = el('a', 'path ' + id, 'path');
    a.addEventListener('click', function () { showPath(id); });
    return a;
  }

  // ---- Summary ----
  function summary() {
    var box = document.getElementById('ft-summary');
    box.textContent = '';
    var s = meta.summary;
    document.getElementById('ft-sub').textContent =
      meta.generator + ' \u2014 ' + meta.inputs.join(' ');
    box.appendChild(el('p', s.paths + ' paths: ' + s.complete + ' complete, ' + s.partial +
      ' partial, ' + s.failed + ' failed'));
    var grid = el('div', undefined, 'grid');
    box.appendChild(grid);
    if (s.latency_by_role.length) {
      var t = el('table');
      var hr = el('tr');
      ['role', 'hops', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms'].forEach(function (x) { hr.appendChild(el('th', x)); });
      t.appendChild(hr);
      s.latency_by_role.forEach(function (l) {
        var tr = el('tr');
        tr.appendChild(el('td', l.role));
        tr.appendChild(el('td', l.count, 'num'));
        [l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms].forEach(function (x) { tr.appendChild(el('td', fmtMs(x), 'num')); });
        t.appendChild(tr);
      });
      var d = el('div'); d.appendChild(el('h3', 'Latency per hop role')); d.appendChild(t); grid.appendChild(d);
    }
    if (s.slowest.length) {
      var d2 = el('div'); d2.appendChild(el('h3', 'Slowest'));
      var ul = el('ul');
      s.slowest.forEach(function (x) {
        var li = el('li'); li.appendChild(pathLink(x[0])); li.appendChild(document.createTextNode(' ' + fmtMs(x[1]) + ' ms'));
        ul.appendChild(li);
      });
      d2.appendChild(ul); grid.appendChild(d2);
    }
    if (meta.clock_offsets.length) {
      var t2 = el('table');
      var hr2 = el('tr');
      ['capture', 'offset s', '\u00b1 s', 'method', 'connections'].forEach(function (x) { hr2.appendChild(el('th', x)); });
      t2.appendChild(hr2);
      meta.clock_offsets.forEach(function (c) {
        var tr = el('tr');
        tr.appendChild(el('td', c.capture));
        tr.appendChild(el('td', (c.offset_s >= 0 ? '+' : '') + c.offset_s.toFixed(6), 'num'));
        tr.appendChild(el('td', c.uncertainty_s.toFixed(6), 'num'));
        tr.appendChild(el('td', c.method));
        tr.appendChild(el('td', c.samples, 'num'));
        t2.appendChild(tr);
      });
      var d3 = el('div'); d3.appendChild(el('h3', 'Clock offsets')); d3.appendChild(t2); grid.appendChild(d3);
    }
    meta.clock_offset_changes.forEach(function (c) {
      box.appendChild(el('p', 'clock ' + c.capture + ': offset changed from ' + c.from_s.toFixed(6) + ' s to ' +
        c.to_s.toFixed(6) + ' s after ' + c.after_paths + ' paths had been written'));
    });
    meta.failovers.forEach(function (f) {
      var p = el('p', 'Failover of ' + f.vip + ': ' + f.from + ' \u2192 ' + f.to + ' between ' + fmtTs(f.last_advert_before) +
        ' and ' + fmtTs(f.first_sign_after) + '; ' + f.failed_paths.length + ' failed request(s) around it: ');
      f.failed_paths.slice(0, 50).forEach(function (fp) { p.appendChild(pathLink(fp.path)); p.appendChild(document.createTextNode(' ')); });
      box.appendChild(p);
    });
    if (meta.address_book.length) {
      var book = el('details');
      book.appendChild(el('summary', 'Address book (' + meta.address_book.length + ' addresses)'));
      var bt = el('table', undefined, 'mono');
      var bh = el('tr');
      ['name', 'IP', 'MAC', 'host', 'interface', 'role'].forEach(function (x) { bh.appendChild(el('th', x)); });
      bt.appendChild(bh);
      meta.address_book.forEach(function (a) {
        var tr = el('tr');
        [a.name, a.ip, a.mac, a.host, a.interface, a.role].forEach(function (x) { tr.appendChild(el('td', x === null || x === undefined ? '-' : x)); });
        bt.appendChild(tr);
      });
      book.appendChild(bt);
      box.appendChild(book);
    }
    if (meta.anomalies.length) {
      var det = el('details');
      det.appendChild(el('summary', meta.anomalies.length + (meta.truncated_anomalies ? '+' : '') + ' failed path note(s)'));
      var ul2 = el('ul', undefined, 'mono');
      meta.anomalies.forEach(function (a) { ul2.appendChild(el('li', a)); });
      det.appendChild(ul2);
      box.appendChild(det);
    }
  }

  // ---- Table ----
  var state = { uri: '', status: '', code: '', role: '', host: '', sort: 'id', desc: false, page: 0 };
  var view = new Int32Array(0);
  var tbody = document.getElementById('ft-tbody');
  var selected = -1;

  function applyFilter() {
    var uri = state.uri.toLowerCase(), host = state.host.toLowerCase();
    var code = state.code.toLowerCase().replace(/x+$/, '');
    var role = state.role ? '|' + state.role + '|' : '';
    var out = new Int32Array(n), k = 0;
    for (var i = 0; i < n; i++) {
      var r = rows[i];
      if (state.status && r.s !== state.status) continue;
      if (uri && r._uri.indexOf(uri) < 0) continue;
      if (code && r._code.lastIndexOf(code, 0) !== 0) continue;
      if (role && r._roles.indexOf(role) < 0) continue;
      if (host && r._hosts.indexOf(host) < 0) continue;
      out[k++] = i;
    }
    view = out.subarray(0, k);
    applySort();
  }
  function applySort() {
    var key = state.sort === 't' ? keyT : state.sort === 'd' ? keyD : keyId;
    var dir = state.desc ? -1 : 1;
    var a = Array.prototype.slice.call(view);
    a.sort(function (x, y) { return (key[x] - key[y]) * dir || keyId[x] - keyId[y]; });
    view = Int32Array.from(a);
    state.page = 0;
    render();
  }
  function render() {
    var pages = Math.max(1, Math.ceil(view.length / PAGE));
    if (state.page >= pages) state.page = pages - 1;
    var from = state.page * PAGE, to = Math.min(view.length, from + PAGE);
    var frag = document.createDocumentFragment();
    for (var k = from; k < to; k++) {
      var idx = view[k], r = rows[idx];
      var tr = el('tr');
      tr.dataset.idx = idx;
      tr.tabIndex = 0;
      if (idx === selected) tr.className = 'sel';
      tr.appendChild(el('td', r.id, 'num'));
      tr.appendChild(el('td', fmtTs(r.t)));
      tr.appendChild(el('td', fmtMs(r.d), 'num'));
      tr.appendChild(el('td', STATUS[r.s] + (r.st !== undefined ? ' ' + r.st : ''), 'st-' + r.s));
      tr.appendChild(el('td', r.m || '-'));
      var u = el('td', r.u || '-'); u.title = r.u || ''; tr.appendChild(u);
      var c = chainText(r);
      var hc = el('td', c); hc.title = c; tr.appendChild(hc);
      frag.appendChild(tr);
    }
    tbody.textContent = '';
    tbody.appendChild(frag);
    tbody.parentNode.parentNode.scrollTop = 0;
    document.getElementById('p-info').textContent = view.length
      ? 'rows ' + (from + 1) + '\u2013' + to + ' of ' + view.length + ' (' + n + ' paths), page ' + (state.page + 1) + ' of ' + pages
      : 'no path matches (' + n + ' paths)';
    document.getElementById('p-prev').disabled = state.page === 0;
    document.getElementById('p-next').disabled = state.page + 1 >= pages;
  }
  tbody.addEventListener('click', function (e) {
    var tr = e.target.closest('tr');
    if (tr && tr.dataset.idx !== undefined) showIndex(+tr.dataset.idx);
  });
  tbody.addEventListener('keydown', function (e) {
    var tr = e.target.closest('tr');
    if (e.key === 'Enter' && tr && tr.dataset.idx !== undefined) showIndex(+tr.dataset.idx);
  });
  function bind(id, field, ev) {
    var input = document.getElementById(id);
    input.addEventListener(ev, function () {
      state[field] = input.type === 'checkbox' ? input.checked : input.value;
      if (field === 'sort' || field === 'desc') applySort(); else applyFilter();
    });
  }
  bind('f-uri', 'uri', 'input');
  bind('f-status', 'status', 'change');
  bind('f-code', 'code', 'input');
  bind('f-role', 'role', 'change');
  bind('f-host', 'host', 'input');
  bind('f-sort', 'sort', 'change');
  bind('f-desc', 'desc', 'change');
  document.getElementById('ft-filters').addEventListener('submit', function (e) { e.preventDefault(); });
  document.getElementById('p-prev').addEventListener('click', function () { state.page--; render(); });
  document.getElementById('p-next').addEventListener('click', function () { state.page++; render(); });
  Array.prototype.forEach.call(document.querySelectorAll('th[data-sort]'), function (th) {
    th.addEventListener('click', function () {
      var k = th.dataset.sort;
      if (state.sort === k) state.desc = !state.desc; else { state.sort = k; state.desc = k === 'd'; }
      document.getElementById('f-sort').value = state.sort;
      document.getElementById('f-desc').checked = state.desc;
      applySort();
    });
  });
  var roleSelect = document.getElementById('f-role');
  Array.from(roleSet).sort().forEach(function (r) { var o = el('option', r); o.value = r; roleSelect.appendChild(o); });

  // ---- Detail ----
  function chainSvg(r) {
    // Client, then each HTTP hop's NAT children and its server, the VIP where the
    // packet reaches its holder (as flowtrace's own chain diagram orders them).
    var items = [];
    var root = r.h[0];
    if (!root) return el('p', 'no hops', 'note');
    items.push({ fill: '#e7f5ff', title: 'client ' + (root.c || ''), lines: [root.cp !== undefined ? 'seen at ' + meta.captures[root.cp].join(' ') : ''] });
    var holder = r.v ? r.v[1] : null;
    r.h.forEach(function (h) {
      if (h.k === 'n') return;
      var vipPending = h.p === undefined && !!r.v;
      var vipItem = function () { return { fill: '#fff3bf', title: 'VIP ' + r.v[0] + ' held by ' + (r.v[1] || '?'), lines: ['virtual address (VRRP)'] }; };
      r.h.forEach(function (x) {
        if (x.k !== 'n' || x.p !== h.i) return;
        if (vipPending && x.h === holder) { items.push(vipItem()); vipPending = false; }
        items.push({ fill: '#ffecec', title: (x.t || 'NAT') + ' on ' + (x.h || '?'),
          lines: [x.b ? x.b.join(' \u2192 ') : '', x.a ? x.a.join(' \u2192 ') : ''] });
      });
      if (vipPending) items.push(vipItem());
      var fill = { gateway: '#d3f9d8', load_balancer: '#e5dbff', backend: '#ffe8cc' }[h.r] || '#f1f3f5';
      items.push({ fill: fill, title: (h.r || '?') + (h.pr ? ' (' + h.pr + ')' : '') + ' on ' + (h.h || '?'),
        lines: [(h.s || '') + '  ' + (h.st === undefined ? '---' : h.st) + '  ' +
          (h.l === undefined ? 'no response' : fmtMs(h.l) + ' ms, self ' + fmtMs(h.sf) + ' ms'),
          (h.m || r.m || '-') + ' ' + (h.u || r.u || '-') + (h.cf !== undefined ? '  (link confidence ' + h.cf.toFixed(2) + ')' : '')] });
    });
    var W = 560, BH = 58, GAP = 26;
    var svg = svgEl('svg', { width: W, height: 20 + items.length * (BH + GAP), viewBox: '0 0 ' + W + ' ' + (20 + items.length * (BH + GAP)), role: 'img', 'class': 'chain' });
    var defs = svgEl('defs');
    var marker = svgEl('marker', { id: 'ft-arrow', markerWidth: 10, markerHeight: 8, refX: 9, refY: 4, orient: 'auto' });
    marker.appendChild(svgEl('path', { d: 'M0,0 L10,4 L0,8 z', fill: '#212529' }));
    defs.appendChild(marker); svg.appendChild(defs);
    items.forEach(function (it, k) {
      var y = 10 + k * (BH + GAP);
      svg.appendChild(svgEl('rect', { x: 10, y: y, width: W - 20, height: BH, rx: 4, fill: it.fill, stroke: '#212529' }));
      svg.appendChild(svgEl('text', { x: 20, y: y + 18, 'font-size': 14, 'font-weight': 600 }, clip(it.title, 70)));
      it.lines.forEach(function (line, m) {
        svg.appendChild(svgEl('text', { x: 20, y: y + 35 + 15 * m, 'font-size': 12 }, clip(line, 80)));
      });
      if (k + 1 < items.length) {
        svg.appendChild(svgEl('line', { x1: W / 2, y1: y + BH, x2: W / 2, y2: y + BH + GAP - 2, stroke: '#212529', 'marker-end': 'url(#ft-arrow)' }));
      }
    });
    return svg;
  }
  function clip(s, max) { s = String(s); return s.length > max ? s.slice(0, max - 1) + '\u2026' : s; }

  function hopTable(r) {
    var t = el('table', undefined, 'mono');
    var hr = el('tr');
    ['hop', 'parent', 'role / translation', 'host', 'client \u2192 server', 'request', 'status', 'latency ms', 'self ms', 'seen at'].forEach(function (x) { hr.appendChild(el('th', x)); });
    t.appendChild(hr);
    r.h.forEach(function (h) {
      var tr = el('tr');
      tr.appendChild(el('td', h.i, 'num'));
      tr.appendChild(el('td', h.p === undefined ? '-' : h.p, 'num'));
      if (h.k === 'n') {
        tr.appendChild(el('td', h.t || 'NAT'));
        tr.appendChild(el('td', h.h || '?'));
        tr.appendChild(el('td', (h.b ? h.b.join(' \u2192 ') : '') + '  \u21d2  ' + (h.a ? h.a.join(' \u2192 ') : '')));
        for (var q = 0; q < 5; q++) tr.appendChild(el('td', ''));
      } else {
        tr.appendChild(el('td', (h.r || '?') + (h.n ? ' "' + h.n + '"' : '') + (h.pr ? ' (' + h.pr + ')' : '') + (h.cf !== undefined ? ' conf ' + h.cf.toFixed(2) : '')));
        tr.appendChild(el('td', h.h || '?'));
        tr.appendChild(el('td', (h.c || '') + ' \u2192 ' + (h.s || '')));
        tr.appendChild(el('td', (h.m || r.m || '-') + ' ' + (h.u || r.u || '-')));
        tr.appendChild(el('td', h.st === undefined ? '---' : h.st));
        tr.appendChild(el('td', fmtMs(h.l), 'num'));
        tr.appendChild(el('td', fmtMs(h.sf), 'num'));
        tr.appendChild(el('td', h.cp !== undefined ? meta.captures[h.cp].join(' ') : ''));
      }
      t.appendChild(tr);
    });
    return t;
  }

  function showPath(id) {
    var idx = byId.get(id);
    if (idx !== undefined) showIndex(idx);
  }
  function showIndex(idx) {
    selected = idx;
    Array.prototype.forEach.call(tbody.rows, function (tr) { tr.className = +tr.dataset.idx === idx ? 'sel' : ''; });
    var r = rows[idx];
    var d = document.getElementById('ft-detail');
    d.hidden = false;
    d.textContent = '';
    d.dataset.path = r.id;
    d.appendChild(el('h3', 'Path ' + r.id + ' \u2014 ' + STATUS[r.s] + ' \u2014 ' + (r.m || '-') + ' ' + (r.u || '-') +
      ' \u2014 ' + fmtMs(r.d) + ' ms'));
    d.appendChild(el('p', 'start ' + fmtTs(r.t) + (r.v ? '; VIP ' + r.v[0] + ' held by ' + (r.v[1] || '?') : '')));
    var grid = el('div', undefined, 'grid');
    var left = el('div'); left.appendChild(el('h3', 'Chain')); left.appendChild(chainSvg(r));
    grid.appendChild(left);
    var right = el('div'); right.appendChild(el('h3', 'Hops')); right.appendChild(hopTable(r));
    grid.appendChild(right);
    d.appendChild(grid);
    var k = kept[r.id];
    if (k) {
      d.appendChild(el('h3', 'Ladder'));
      k.ladder.forEach(function (svg, p) { d.appendChild(svgImage(svg, 'ladder of path ' + r.id + ' page ' + (p + 1))); });
      d.appendChild(el('h3', 'Swimlanes'));
      d.appendChild(svgImage(k.swimlanes, 'swimlanes of path ' + r.id));
      d.appendChild(el('h3', 'Chain with addresses'));
      d.appendChild(svgImage(k.chain, 'chain of path ' + r.id));
    } else {
      d.appendChild(el('p', 'Packets not kept for this path: the run keeps the packets (ladder and swimlanes) of a few paths only ' +
        '\u2014 by default the slowest complete one and the first failed one; choose others with --path ID, --uri PATTERN, --slowest N or --failed. ' +
        'Kept here: ' + (meta.kept.length ? meta.kept.map(function (x) { return x.id; }).join(', ') : 'none') + '.', 'note'));
    }
    d.scrollIntoView({ block: 'start' });
  }

  // ---- Topology ----
  function topology() {
    var box = document.getElementById('ft-topology');
    if (meta.topology) box.appendChild(svgImage(meta.topology, 'topology map'));
    else box.appendChild(el('p', 'no topology', 'note'));
  }

  // ---- VIP timeline ----
  function vipTimeline() {
    var box = document.getElementById('ft-vip');
    var t0 = Infinity, t1 = -Infinity;
    for (var i = 0; i < n; i++) { if (keyT[i] < t0) t0 = keyT[i]; if (keyT[i] + keyD[i] / 1e3 > t1) t1 = keyT[i] + keyD[i] / 1e3; }
    meta.vip_timeline.forEach(function (v) { t0 = Math.min(t0, v.from); t1 = Math.max(t1, v.to); });
    if (!isFinite(t0)) { box.appendChild(el('p', 'nothing to show', 'note')); return; }
    if (t1 <= t0) t1 = t0 + 1e-3;
    var vips = [];
    meta.vip_timeline.forEach(function (v) { if (vips.indexOf(v.vip) < 0) vips.push(v.vip); });
    var W = 1100, L = 150, R = 20, LANE = 34, top = 24;
    var H = top + vips.length * LANE + 2 * 46 + 30;
    var svg = svgEl('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img', id: 'ft-vip-svg' });
    var x = function (t) { return L + (t - t0) / (t1 - t0) * (W - L - R); };
    svg.appendChild(svgEl('text', { x: 4, y: 14, 'font-size': 12 }, fmtTs(t0) + ' UTC \u2026 ' + fmtTs(t1) + ' (' + (t1 - t0).toFixed(3) + ' s)'));
    var colors = ['#74c0fc', '#ffa94d', '#8ce99a', '#b197fc', '#ffd43b', '#63e6be'];
    var holders = [];
    vips.forEach(function (vip, k) {
      var y = top + k * LANE;
      svg.appendChild(svgEl('text', { x: 4, y: y + 20, 'font-size': 12 }, 'VIP ' + vip));
      meta.vip_timeline.forEach(function (v) {
        if (v.vip !== vip) return;
        var c = holders.indexOf(v.holder); if (c < 0) { holders.push(v.holder); c = holders.length - 1; }
        var x0 = x(v.from), w = Math.max(2, x(v.to) - x0);
        var rect = svgEl('rect', { x: x0, y: y + 4, width: w, height: LANE - 8, fill: colors[c % colors.length], stroke: '#495057' });
        rect.appendChild(svgEl('title', {}, v.holder + ' (' + v.holder_ip + ', priority ' + v.priority + ') ' + fmtTs(v.from) + ' \u2026 ' + fmtTs(v.to) + ', ' + v.adverts + ' adverts'));
        svg.appendChild(rect);
        if (w > 40) svg.appendChild(svgEl('text', { x: x0 + 4, y: y + 21, 'font-size': 12 }, clip(v.holder, Math.floor(w / 7))));
      });
    });
    // Requests per pixel column: all in grey, failed in red.
    var cols = W - L - R, all = new Uint32Array(cols + 1), bad = new Uint32Array(cols + 1);
    for (var q = 0; q < n; q++) {
      var c = Math.floor(x(keyT[q]) - L);
      all[c]++; if (rows[q].s === 'f') bad[c]++;
    }
    var maxAll = Math.max.apply(null, Array.from(all)) || 1, maxBad = Math.max.apply(null, Array.from(bad)) || 1;
    var yA = top + vips.length * LANE + 6, yB = yA + 46;
    svg.appendChild(svgEl('text', { x: 4, y: yA + 24, 'font-size': 12 }, 'requests'));
    svg.appendChild(svgEl('text', { x: 4, y: yB + 24, 'font-size': 12, fill: '#c92a2a' }, 'failed requests'));
    var dAll = '', dBad = '';
    for (var p = 0; p <= cols; p++) {
      if (all[p]) { var h1 = Math.max(1, 40 * all[p] / maxAll); dAll += 'M' + (L + p + 0.5) + ',' + (yA + 40) + 'v-' + h1.toFixed(1); }
      if (bad[p]) { var h2 = Math.max(4, 40 * bad[p] / maxBad); dBad += 'M' + (L + p + 0.5) + ',' + (yB + 40) + 'v-' + h2.toFixed(1); }
    }
    if (dAll) svg.appendChild(svgEl('path', { d: dAll, stroke: '#868e96', 'stroke-width': 1 }));
    if (dBad) svg.appendChild(svgEl('path', { d: dBad, stroke: '#c92a2a', 'stroke-width': 1.5, 'class': 'failed-marks' }));
    svg.appendChild(svgEl('line', { x1: L, y1: yA + 40, x2: W - R, y2: yA + 40, stroke: '#adb5bd' }));
    svg.appendChild(svgEl('line', { x1: L, y1: yB + 40, x2: W - R, y2: yB + 40, stroke: '#adb5bd' }));
    meta.failovers.forEach(function (f) {
      var fx = x(f.first_sign_after);
      svg.appendChild(svgEl('line', { x1: fx, y1: top, x2: fx, y2: H - 20, stroke: '#c92a2a', 'stroke-dasharray': '4 3' }));
      svg.appendChild(svgEl('text', { x: Math.min(fx + 4, W - 160), y: H - 6, 'font-size': 12, fill: '#c92a2a' }, 'failover ' + f.from + ' \u2192 ' + f.to));
    });
    box.appendChild(svg);
    var failed = [];
    for (var z = 0; z < n && failed.length < 200; z++) if (rows[z].s === 'f') failed.push(rows[z].id);
    if (failed.length) {
      var pp = el('p', 'Failed requests' + (failed.length === 200 ? ' (first 200)' : '') + ': ');
      failed.forEach(function (id) { pp.appendChild(pathLink(id)); pp.appendChild(document.createTextNode(' ')); });
      box.appendChild(pp);
    }
  }

  summary();
  applyFilter();
  topology();
  vipTimeline();
  // #path=ID opens that path (a link to one path of the report); with &alone, only
  // that path's detail (or the section of #SECTION&alone) is shown: for printing and
  // for screenshots (headless Chromium's are blank once a page has scrolled).
  var parts = location.hash.slice(1).split('&');
  var want = /^path=(\d+)$/.exec(parts[0]);
  if (want) showPath(+want[1]);
  if (parts.indexOf('alone') > 0) {
    var target = document.getElementById(want ? 'paths' : parts[0]);
    if (target && target.parentNode.tagName === 'MAIN') {
      document.body.classList.add('alone');
      target.classList.add('shown');
      if (want) target.classList.add('detail-only');
      window.scrollTo(0, 0);
    }
  }
  var ready = performance.now();
  void document.body.offsetHeight;
  var readyLaid = performance.now();

  // ---- Self-test (#selftest[&uri=X&host=Y]): checks the page against its own data
  // and writes a JSON verdict into #ft-selftest for a headless browser to read.
  if (location.hash.lastIndexOf('#selftest', 0) === 0) {
    var params = {};
    location.hash.slice(9).split('&').forEach(function (kv) {
      var m = kv.indexOf('=');
      if (m > 0) params[decodeURIComponent(kv.slice(0, m))] = decodeURIComponent(kv.slice(m + 1));
    });
    var v = { paths: n, meta_paths: meta.paths, ready_ms: Math.round(ready), laid_out_ms: Math.round(readyLaid) };
    v.table_rows = tbody.rows.length;
    v.view = view.length;
    var timed = function (f) { var a = performance.now(); f(); void document.body.offsetHeight; return Math.round((performance.now() - a) * 10) / 10; };
    var set = function (id, val) {
      var inp = document.getElementById(id);
      if (inp.type === 'checkbox') inp.checked = val; else inp.value = val;
      inp.dispatchEvent(new Event(inp.tagName === 'SELECT' || inp.type === 'checkbox' ? 'change' : 'input'));
    };
    v.filter_failed_ms = timed(function () { set('f-status', 'f'); });
    v.failed = view.length;
    v.summary_failed = meta.summary.failed;
    set('f-status', '');
    var uri = params.uri || '/';
    v.filter_uri_ms = timed(function () { set('f-uri', uri); });
    v.uri = uri;
    v.uri_matches = view.length;
    set('f-uri', '');
    if (params.host) { set('f-host', params.host); v.host = params.host; v.host_matches = view.length; set('f-host', ''); }
    if (params.role) { set('f-role', params.role); v.role = params.role; v.role_matches = view.length; set('f-role', ''); }
    v.sort_latency_ms = timed(function () { set('f-sort', 'd'); set('f-desc', true); });
    var sorted = true;
    for (var s = 1; s < view.length; s++) if (keyD[view[s - 1]] < keyD[view[s]]) { sorted = false; break; }
    v.sorted_desc = sorted;
    v.slowest_first = view.length ? rows[view[0]].id : null;
    v.next_page_ms = timed(function () { document.getElementById('p-next').click(); });
    v.page_after_next = state.page;
    set('f-sort', 'id'); set('f-desc', false);
    v.first_row_text = tbody.rows.length ? Array.prototype.map.call(tbody.rows[0].cells, function (c) { return c.textContent; }) : null;
    v.click_ms = timed(function () { if (tbody.rows.length) tbody.rows[0].click(); });
    var det = document.getElementById('ft-detail');
    v.detail_path = det.dataset.path === undefined ? null : +det.dataset.path;
    v.detail_svg = det.querySelectorAll('svg rect').length;
    v.detail_not_kept_note = det.textContent.indexOf('Packets not kept') >= 0;
    v.kept = meta.kept.map(function (k) { return k.id; });
    if (meta.kept.length) {
      showPath(meta.kept[0].id);
      v.kept_detail_images = det.querySelectorAll('img.diagram').length;
    }
    v.vip_failed_marks = document.querySelectorAll('#ft-vip-svg .failed-marks').length;
    v.vip_lanes = meta.vip_timeline.length;
    v.topology_images = document.querySelectorAll('#ft-topology img').length;
    v.external_refs = Array.prototype.filter.call(document.querySelectorAll('[src],[href]'), function (e) {
      var u = e.getAttribute('src') || e.getAttribute('href') || '';
      return !(u.lastIndexOf('blob:', 0) === 0 || u.charAt(0) === '#');
    }).length;
    v.errors = window.ftErrors.slice();
    var out = el('pre', JSON.stringify(v));
    out.id = 'ft-selftest';
    document.body.appendChild(out);
    // Images decode asynchronously: a second verdict once they have (or failed).
    var imgs = Array.prototype.slice.call(document.querySelectorAll('img.diagram'));
    Promise.all(imgs.map(function (im) { return im.decode().then(function () { return im.naturalWidth > 0; }, function () { return false; }); }))
      .then(function (ok) {
        var o2 = el('pre', JSON.stringify({ images: ok.length, decoded: ok.filter(Boolean).length, errors: window.ftErrors.slice() }));
        o2.id = 'ft-selftest-images';
        document.body.appendChild(o2);
      });
  }
})();
