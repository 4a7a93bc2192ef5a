// Batch application and multiset semantics of tailgate.js's RowSet.
import test from 'node:test';
import assert from 'node:assert/strict';
import { RowSet, rowKey, rowToObject, rowsToObjects, objectToRow } from '../../htdocs/tailgate.js';
import { bag } from './helpers/fakefetch.mjs';

const COLS = [
  { name: 'buyer', type: 'text' },
  { name: 'n', type: 'int8' },
];

test('the snapshot batch applied to an empty set is the state', () => {
  const s = new RowSet(COLS);
  const ch = s.apply({ timestamp: '1', inserted: [['a', 1], ['b', 2]], deleted: [] });
  assert.deepEqual(bag(s.rows()), bag([['a', 1], ['b', 2]]));
  assert.equal(s.size, 2);
  assert.deepEqual(ch.insert, [{ buyer: 'a', n: 1 }, { buyer: 'b', n: 2 }]);
  assert.deepEqual(ch.remove, []);
  assert.equal(ch.missing, 0);
});

test('a batch: deletes and inserts of one timestamp', () => {
  const s = new RowSet([{ name: 'editor' }, { name: 'count' }]);
  s.apply({ inserted: [['Lockal', 4590], ['Matlin', 5220]], deleted: [] });
  s.apply({
    timestamp: '1608081358001',
    inserted: [['Epidosis', 4595], ['Matlin', 5221]],
    deleted: [['Lockal', 4590], ['Matlin', 5220]],
  });
  assert.deepEqual(bag(s.rows()), bag([['Epidosis', 4595], ['Matlin', 5221]]));
});

test('multiset: duplicates count, a delete removes one copy', () => {
  const s = new RowSet(COLS);
  s.apply({ inserted: [['a', 1], ['a', 1], ['a', 1]] });
  assert.equal(s.count(['a', 1]), 3);
  const ch = s.apply({ deleted: [['a', 1]] });
  assert.equal(s.count(['a', 1]), 2);
  assert.equal(ch.remove.length, 1);
  s.apply({ deleted: [['a', 1], ['a', 1]] });
  assert.equal(s.count(['a', 1]), 0);
  assert.equal(s.has(['a', 1]), false);
  assert.equal(s.size, 0);
});

test('deletes of rows not held are counted as missing, never go negative', () => {
  const s = new RowSet(COLS);
  s.apply({ inserted: [['a', 1]] });
  const ch = s.apply({ deleted: [['a', 1], ['a', 1], ['zz', 9]] });
  assert.equal(ch.missing, 2);
  assert.equal(ch.remove.length, 1);
  assert.equal(s.size, 0);
});

test('a delete and an insert of the same row in one batch cancel out', () => {
  const s = new RowSet(COLS);
  s.apply({ inserted: [['a', 1]] });
  const ch = s.apply({ inserted: [['a', 1]], deleted: [['a', 1]] });
  assert.deepEqual(ch, { insert: [], remove: [], missing: 0 });
  assert.equal(s.count(['a', 1]), 1);
  // Even for a row not held yet (order within a timestamp has no meaning).
  const ch2 = s.apply({ deleted: [['b', 2]], inserted: [['b', 2]] });
  assert.equal(ch2.missing, 0);
  assert.equal(s.count(['b', 2]), 0);
});

test('rows compare by value: numbers, strings, null, booleans, nested json', () => {
  const s = new RowSet([{ name: 'j' }]);
  s.apply({ inserted: [[{ a: 1, b: [1, { c: null }] }], [null], [true], ['1'], [1]] });
  assert.equal(s.size, 5);
  s.apply({ deleted: [[{ b: [1, { c: null }], a: 1 }]] }); // other key order: same value
  assert.equal(s.size, 4);
  s.apply({ deleted: [['1']] }); // the string, not the number
  assert.equal(s.count([1]), 1);
  assert.equal(s.count(['1']), 0);
  assert.equal(rowKey([{ b: 1, a: 2 }]), rowKey([{ a: 2, b: 1 }]));
  assert.notEqual(rowKey([1, '1']), rowKey(['1', 1]));
});

test('changeset objects keep their identity: remove hands back the inserted object', () => {
  const s = new RowSet(COLS);
  const { insert } = s.apply({ inserted: [['a', 1], ['a', 1], ['b', 2]] });
  const [a1, a2, b] = insert;
  assert.notEqual(a1, a2); // one object per copy
  const ch = s.apply({ deleted: [['b', 2], ['a', 1]] });
  assert.equal(ch.remove.length, 2);
  assert.ok(ch.remove.includes(b));
  assert.ok(ch.remove.includes(a1) || ch.remove.includes(a2));
  // What is left is exactly the other objects.
  const left = s.objects();
  assert.equal(left.length, 1);
  assert.ok(left[0] === a1 || left[0] === a2);
  assert.ok(!ch.remove.includes(left[0]));
});

test('a changeset applied to a Vega-like identity store reproduces the state', () => {
  // A store that, like vega.changeset().remove(tuples), removes by identity.
  const store = new Set();
  const s = new RowSet(COLS);
  const batches = [
    { inserted: [['a', 1], ['b', 2], ['b', 2]] },
    { inserted: [['c', 3]], deleted: [['b', 2]] },
    { inserted: [['a', 2]], deleted: [['a', 1]] },
    { inserted: [['b', 2]], deleted: [['c', 3], ['b', 2]] },
  ];
  for (const bt of batches) {
    const ch = s.apply(bt);
    for (const o of ch.remove) assert.ok(store.delete(o), 'removed object was in the store');
    for (const o of ch.insert) store.add(o);
    assert.deepEqual(bag([...store].map((o) => objectToRow(COLS, o))), bag(s.rows()));
  }
});

test('replace(): only the difference changes; kept rows keep their objects', () => {
  const s = new RowSet(COLS);
  const { insert } = s.apply({ inserted: [['a', 1], ['b', 2], ['b', 2], ['c', 3]] });
  const a = insert[0];
  const d = s.replace([['a', 1], ['b', 2], ['d', 4], ['d', 4]]);
  assert.deepEqual(bag(d.deleted), bag([['b', 2], ['c', 3]]));
  assert.deepEqual(bag(d.inserted), bag([['d', 4], ['d', 4]]));
  assert.equal(d.insert.length, 2);
  assert.equal(d.remove.length, 2);
  assert.ok(s.objects().includes(a), 'unchanged row keeps its object');
  assert.deepEqual(bag(s.rows()), bag([['a', 1], ['b', 2], ['d', 4], ['d', 4]]));
});

test('replace() with other columns replaces every object', () => {
  const s = new RowSet(COLS);
  s.apply({ inserted: [['a', 1]] });
  const cols2 = [{ name: 'who', type: 'text' }, { name: 'n', type: 'int8' }];
  const d = s.replace([['a', 1]], cols2);
  assert.equal(d.remove.length, 1);
  assert.deepEqual(d.insert, [{ who: 'a', n: 1 }]);
  assert.deepEqual(s.objects(), [{ who: 'a', n: 1 }]);
});

test('row/object helpers', () => {
  assert.deepEqual(rowToObject(COLS, ['x', 5]), { buyer: 'x', n: 5 });
  assert.deepEqual(rowToObject(['p', 'q'], [1, 2]), { p: 1, q: 2 });
  assert.deepEqual(rowToObject([], [1, 2]), { 0: 1, 1: 2 });
  assert.deepEqual(rowsToObjects(COLS, [['x', 5], ['y', null]]), [{ buyer: 'x', n: 5 }, { buyer: 'y', n: null }]);
  assert.deepEqual(objectToRow(COLS, { n: 5, buyer: 'x' }), ['x', 5]);
  assert.deepEqual(objectToRow(COLS, { buyer: 'x' }), ['x', null]);
});

test('random batches: the set equals a naive multiset model', () => {
  let seed = 42;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const s = new RowSet(COLS);
  let model = [];
  for (let i = 0; i < 300; i++) {
    const deleted = [];
    const pool = model.slice();
    for (let j = 0; j < Math.floor(rnd() * 4) && pool.length; j++) deleted.push(pool.splice(Math.floor(rnd() * pool.length), 1)[0]);
    const inserted = [];
    for (let j = 0; j < Math.floor(rnd() * 4); j++) inserted.push(['r' + Math.floor(rnd() * 5), Math.floor(rnd() * 3)]);
    const ch = s.apply({ inserted, deleted });
    assert.equal(ch.missing, 0);
    model = pool.concat(inserted);
    assert.deepEqual(bag(s.rows()), bag(model));
  }
});
