-- auction_house.sql - the auction house of Materialize's AUCTION load
-- generator, for PostgreSQL 15, with Materialize's published views kept incrementally as
-- TABLES (logical replication streams tables, not views).
--
--   psql -v ON_ERROR_STOP=1 -f sql/auction_house.sql        (idempotent)
--
-- Base tables (what the generator writes; columns as Materialize's):
--   organizations, users, accounts, auctions, bids
-- Kept by triggers (what tailgate streams):
--   highest_bid_per_auction  the highest on-time bid of every auction so far
--   winning_bids             highest_bid_per_auction of the auctions that ended
--                            (Materialize: WHERE end_time < mz_now()); filled by
--                            close_ended_auctions(), which the load generator
--                            calls every tick
--   top_buyers               the 10 buyers with the most wins (then the
--                            highest total winning amount, then the lower id)
--   auction_stats            one row of counters
-- Also: the view on_time_bids (Materialize's published definition, for ad-hoc queries),
-- buyer_stats (wins and total per buyer, feeds top_buyers) and open_auctions
-- (auctions not yet closed, with their end_time).
--
-- Exactness.  A bid is on time when bid_time < its auction's end_time (the
-- Materialize's on_time_bids).  The highest bid wins; on equal amounts the earlier
-- bid_time, then the lower bid id (Materialize's ORDER BY amount DESC LIMIT
-- 1 leaves ties open; a table needs one answer).  close_ended_auctions()
-- locks the open_auctions rows of ended auctions (FOR UPDATE SKIP LOCKED),
-- deletes them, and only then, in a new statement (a new snapshot under READ
-- COMMITTED), copies their highest bids into winning_bids.  A bid's trigger
-- takes FOR KEY SHARE on its auction's open_auctions row first, which
-- conflicts with that lock: either the bid commits first (and the close,
-- which skips locked rows, takes the auction on a later call and then sees
-- the bid), or the close commits first and the bid's trigger finds the
-- auction closed and raises the winning_bids row itself.  So winning_bids is
-- always exactly "highest on-time bid of every closed auction", whatever
-- commits concurrently.  The functions assume READ COMMITTED (the default).
--
-- REPLICA IDENTITY FULL is set on every table a feed may stream and that
-- sees UPDATE or DELETE: tailgate turns an UPDATE into "delete the old row,
-- insert the new one" and needs the old row's every column, which pgoutput
-- sends only with REPLICA IDENTITY FULL.  The base tables get it too, so an
-- operator's UPDATE or DELETE on them streams correctly.
--
-- reset_auction_house() empties everything but organizations, users and
-- accounts.

SET client_min_messages = warning;
BEGIN;

-- ---- base tables (Materialize's AUCTION load generator) --------------------

CREATE TABLE IF NOT EXISTS organizations (
	id   int8 PRIMARY KEY,
	name text NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
	id     int8 PRIMARY KEY,
	org_id int8 REFERENCES organizations (id),
	name   text NOT NULL
);

CREATE TABLE IF NOT EXISTS accounts (
	id      int8 PRIMARY KEY,
	org_id  int8 REFERENCES organizations (id),
	balance int8 NOT NULL
);

CREATE TABLE IF NOT EXISTS auctions (
	id       int8 PRIMARY KEY,
	seller   int8 REFERENCES users (id),
	item     text NOT NULL,
	end_time timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS bids (
	id         int8 PRIMARY KEY,
	buyer      int8 REFERENCES users (id),
	auction_id int8 NOT NULL REFERENCES auctions (id) ON DELETE CASCADE,
	amount     int4 NOT NULL,
	bid_time   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bids_auction_id ON bids (auction_id);

-- ---- derived state ---------------------------------------------------------------

-- Materialize's on_time_bids, as a plain view for ad-hoc queries.
CREATE OR REPLACE VIEW on_time_bids AS
	SELECT bids.id AS bid_id, auctions.id AS auction_id, auctions.seller, bids.buyer,
	       auctions.item, bids.bid_time, auctions.end_time, bids.amount
	FROM bids JOIN auctions ON bids.auction_id = auctions.id
	WHERE bids.bid_time < auctions.end_time;

-- Auctions not yet closed by close_ended_auctions().
CREATE TABLE IF NOT EXISTS open_auctions (
	auction_id int8 PRIMARY KEY REFERENCES auctions (id) ON DELETE CASCADE,
	end_time   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS open_auctions_end_time ON open_auctions (end_time);

-- Columns as Materialize's highest_bid_per_auction.
CREATE TABLE IF NOT EXISTS highest_bid_per_auction (
	auction_id int8 PRIMARY KEY,
	bid_id     int8 NOT NULL,
	buyer      int8,
	seller     int8,
	item       text,
	amount     int4 NOT NULL,
	bid_time   timestamptz NOT NULL,
	end_time   timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS winning_bids (
	auction_id int8 PRIMARY KEY,
	bid_id     int8 NOT NULL,
	buyer      int8,
	seller     int8,
	item       text,
	amount     int4 NOT NULL,
	bid_time   timestamptz NOT NULL,
	end_time   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS winning_bids_amount ON winning_bids (amount);

CREATE TABLE IF NOT EXISTS buyer_stats (
	buyer        int8 PRIMARY KEY,
	wins         int8 NOT NULL,
	total_amount int8 NOT NULL
);
CREATE INDEX IF NOT EXISTS buyer_stats_rank ON buyer_stats (wins DESC, total_amount DESC, buyer);

-- No rank column on purpose: a new leader would otherwise change all ten
-- rows.  Clients order by (wins, total_amount) themselves.
CREATE TABLE IF NOT EXISTS top_buyers (
	buyer        int8 PRIMARY KEY,
	name         text,
	wins         int8 NOT NULL,
	total_amount int8 NOT NULL
);

CREATE TABLE IF NOT EXISTS auction_stats (
	id             int4 PRIMARY KEY CHECK (id = 1),
	auctions       int8 NOT NULL DEFAULT 0,  -- auctions ever created
	open_auctions  int8 NOT NULL DEFAULT 0,  -- not yet closed
	bids           int8 NOT NULL DEFAULT 0,  -- bids ever placed
	on_time_bids   int8 NOT NULL DEFAULT 0,  -- of which before end_time
	wins           int8 NOT NULL DEFAULT 0,  -- rows in winning_bids
	win_amount     int8 NOT NULL DEFAULT 0   -- sum of winning_bids.amount
);
INSERT INTO auction_stats (id) VALUES (1) ON CONFLICT DO NOTHING;

ALTER TABLE organizations REPLICA IDENTITY FULL;
ALTER TABLE users REPLICA IDENTITY FULL;
ALTER TABLE accounts REPLICA IDENTITY FULL;
ALTER TABLE auctions REPLICA IDENTITY FULL;
ALTER TABLE bids REPLICA IDENTITY FULL;
ALTER TABLE highest_bid_per_auction REPLICA IDENTITY FULL;
ALTER TABLE winning_bids REPLICA IDENTITY FULL;
ALTER TABLE buyer_stats REPLICA IDENTITY FULL;
ALTER TABLE top_buyers REPLICA IDENTITY FULL;
ALTER TABLE auction_stats REPLICA IDENTITY FULL;

-- ---- auctions ----------------------------------------------------------------------

-- A new auction is open until close_ended_auctions() takes it.
CREATE OR REPLACE FUNCTION auctions_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	n int8;
BEGIN
	INSERT INTO open_auctions (auction_id, end_time)
		SELECT id, end_time FROM new_rows;
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE auction_stats SET auctions = auctions + n, open_auctions = open_auctions + n
		WHERE id = 1;
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS auctions_after_insert ON auctions;
CREATE TRIGGER auctions_after_insert AFTER INSERT ON auctions
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION auctions_after_insert();

-- ---- the highest bid -------------------------------------------------------------

-- Does bid a beat bid b?  Higher amount; then earlier bid_time; then lower id.
CREATE OR REPLACE FUNCTION bid_beats(a_amount int4, a_time timestamptz, a_id int8,
				     b_amount int4, b_time timestamptz, b_id int8)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
	SELECT a_amount > b_amount
	    OR (a_amount = b_amount AND (a_time, a_id) < (b_time, b_id))
$$;

-- A new bid: if on time, raise its auction's highest bid; if the auction
-- was already closed (the bid committed after the close took the auction),
-- raise its winning bid too.
CREATE OR REPLACE FUNCTION bids_after_insert_row() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	a auctions%ROWTYPE;
	closed boolean;
BEGIN
	SELECT * INTO a FROM auctions WHERE id = NEW.auction_id;
	IF NOT FOUND OR NEW.bid_time >= a.end_time THEN
		RETURN NULL;  -- not on time: not in on_time_bids
	END IF;
	-- Conflicts with close_ended_auctions()'s FOR UPDATE on this row.
	PERFORM 1 FROM open_auctions WHERE auction_id = NEW.auction_id FOR KEY SHARE;
	closed := NOT FOUND;

	INSERT INTO highest_bid_per_auction AS h
		VALUES (a.id, NEW.id, NEW.buyer, a.seller, a.item, NEW.amount, NEW.bid_time,
			a.end_time)
	ON CONFLICT (auction_id) DO UPDATE
		SET bid_id = EXCLUDED.bid_id, buyer = EXCLUDED.buyer, amount = EXCLUDED.amount,
		    bid_time = EXCLUDED.bid_time
		WHERE bid_beats(EXCLUDED.amount, EXCLUDED.bid_time, EXCLUDED.bid_id,
				h.amount, h.bid_time, h.bid_id);
	IF closed THEN
		INSERT INTO winning_bids AS w
			VALUES (a.id, NEW.id, NEW.buyer, a.seller, a.item, NEW.amount, NEW.bid_time,
				a.end_time)
		ON CONFLICT (auction_id) DO UPDATE
			SET bid_id = EXCLUDED.bid_id, buyer = EXCLUDED.buyer,
			    amount = EXCLUDED.amount, bid_time = EXCLUDED.bid_time
			WHERE bid_beats(EXCLUDED.amount, EXCLUDED.bid_time, EXCLUDED.bid_id,
					w.amount, w.bid_time, w.bid_id);
	END IF;
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS bids_after_insert_row ON bids;
CREATE TRIGGER bids_after_insert_row AFTER INSERT ON bids
	FOR EACH ROW EXECUTE FUNCTION bids_after_insert_row();

CREATE OR REPLACE FUNCTION bids_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	UPDATE auction_stats s
		SET bids = s.bids + n.total, on_time_bids = s.on_time_bids + n.on_time
		FROM (SELECT count(*) AS total,
			     count(*) FILTER (WHERE b.bid_time < a.end_time) AS on_time
		      FROM new_rows b JOIN auctions a ON a.id = b.auction_id) n
		WHERE s.id = 1;
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS bids_after_insert ON bids;
CREATE TRIGGER bids_after_insert AFTER INSERT ON bids
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION bids_after_insert();

-- Recompute one auction's highest and (when closed) winning bid from the
-- bids themselves: the general path for UPDATE and DELETE of bids or
-- auctions, which the load generator never does but an operator may.
CREATE OR REPLACE FUNCTION refresh_auction(aid int8) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	a auctions%ROWTYPE;
	best highest_bid_per_auction%ROWTYPE;
	is_open boolean;
BEGIN
	PERFORM 1 FROM open_auctions WHERE auction_id = aid FOR KEY SHARE;
	is_open := FOUND;
	SELECT * INTO a FROM auctions WHERE id = aid;
	IF FOUND THEN
		SELECT a.id, b.id, b.buyer, a.seller, a.item, b.amount, b.bid_time, a.end_time
			INTO best
			FROM bids b
			WHERE b.auction_id = aid AND b.bid_time < a.end_time
			ORDER BY b.amount DESC, b.bid_time, b.id
			LIMIT 1;
	END IF;
	IF best.auction_id IS NULL THEN
		DELETE FROM highest_bid_per_auction WHERE auction_id = aid;
		DELETE FROM winning_bids WHERE auction_id = aid;
		RETURN;
	END IF;
	INSERT INTO highest_bid_per_auction AS h SELECT best.*
	ON CONFLICT (auction_id) DO UPDATE
		SET bid_id = EXCLUDED.bid_id, buyer = EXCLUDED.buyer, seller = EXCLUDED.seller,
		    item = EXCLUDED.item, amount = EXCLUDED.amount, bid_time = EXCLUDED.bid_time,
		    end_time = EXCLUDED.end_time
		WHERE h IS DISTINCT FROM EXCLUDED;
	IF is_open THEN
		DELETE FROM winning_bids WHERE auction_id = aid;
	ELSE
		INSERT INTO winning_bids AS w SELECT best.*
		ON CONFLICT (auction_id) DO UPDATE
			SET bid_id = EXCLUDED.bid_id, buyer = EXCLUDED.buyer,
			    seller = EXCLUDED.seller, item = EXCLUDED.item,
			    amount = EXCLUDED.amount, bid_time = EXCLUDED.bid_time,
			    end_time = EXCLUDED.end_time
			WHERE w IS DISTINCT FROM EXCLUDED;
	END IF;
END $$;

CREATE OR REPLACE FUNCTION bids_after_change_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM refresh_auction(OLD.auction_id);
	IF TG_OP = 'UPDATE' AND NEW.auction_id <> OLD.auction_id THEN
		PERFORM refresh_auction(NEW.auction_id);
	END IF;
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS bids_after_change_row ON bids;
CREATE TRIGGER bids_after_change_row AFTER UPDATE OR DELETE ON bids
	FOR EACH ROW EXECUTE FUNCTION bids_after_change_row();

CREATE OR REPLACE FUNCTION auctions_after_change_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'UPDATE' THEN
		UPDATE open_auctions SET end_time = NEW.end_time
			WHERE auction_id = NEW.id AND end_time <> NEW.end_time;
		PERFORM refresh_auction(NEW.id);
	ELSE
		DELETE FROM highest_bid_per_auction WHERE auction_id = OLD.id;
		DELETE FROM winning_bids WHERE auction_id = OLD.id;
	END IF;
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS auctions_after_change_row ON auctions;
CREATE TRIGGER auctions_after_change_row AFTER UPDATE OR DELETE ON auctions
	FOR EACH ROW EXECUTE FUNCTION auctions_after_change_row();

-- After an UPDATE or DELETE of auctions or bids (never the generator's
-- doing), count the base tables again: simple beats fast on this path.
CREATE OR REPLACE FUNCTION recount_auction_stats() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	UPDATE auction_stats SET
		auctions = (SELECT count(*) FROM auctions),
		open_auctions = (SELECT count(*) FROM open_auctions),
		bids = (SELECT count(*) FROM bids),
		on_time_bids = (SELECT count(*) FROM on_time_bids)
	WHERE id = 1;
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS auctions_recount ON auctions;
CREATE TRIGGER auctions_recount AFTER UPDATE OR DELETE ON auctions
	FOR EACH STATEMENT EXECUTE FUNCTION recount_auction_stats();
DROP TRIGGER IF EXISTS bids_recount ON bids;
CREATE TRIGGER bids_recount AFTER UPDATE OR DELETE ON bids
	FOR EACH STATEMENT EXECUTE FUNCTION recount_auction_stats();

-- ---- closing -----------------------------------------------------------------------

-- Move every auction whose end_time has passed into winning_bids (at most
-- max_auctions per call; an auction one of whose bids is still in flight is
-- left for the next call).  Returns how many auctions it closed.  Call it
-- periodically (the load generator does, every tick) and outside a long
-- transaction: it sees bids committed before it locked the auctions.
CREATE OR REPLACE FUNCTION close_ended_auctions(max_auctions int DEFAULT 100000)
RETURNS int8 LANGUAGE plpgsql AS $$
DECLARE
	ids int8[];
	n int8;
BEGIN
	SELECT array_agg(auction_id) INTO ids FROM (
		SELECT auction_id FROM open_auctions
		WHERE end_time < now()
		ORDER BY end_time
		LIMIT max_auctions
		FOR UPDATE SKIP LOCKED) e;
	IF ids IS NULL THEN
		RETURN 0;
	END IF;
	DELETE FROM open_auctions WHERE auction_id = ANY (ids);
	GET DIAGNOSTICS n = ROW_COUNT;
	-- A new statement, so a new snapshot: every bid that committed before
	-- we took the locks is in highest_bid_per_auction now.
	INSERT INTO winning_bids
		SELECT * FROM highest_bid_per_auction WHERE auction_id = ANY (ids)
		ORDER BY auction_id;
	UPDATE auction_stats SET open_auctions = open_auctions - n WHERE id = 1;
	RETURN n;
END $$;

-- ---- buyers and counters from winning_bids ------------------------------------------

-- The ten best buyers, written as a difference: only rows that changed are
-- deleted and inserted, so the stream carries only real changes.
CREATE OR REPLACE FUNCTION refresh_top_buyers() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	DELETE FROM top_buyers t WHERE NOT EXISTS (
		SELECT 1 FROM (SELECT s.buyer, u.name, s.wins, s.total_amount
			       FROM buyer_stats s LEFT JOIN users u ON u.id = s.buyer
			       ORDER BY s.wins DESC, s.total_amount DESC, s.buyer LIMIT 10) w
		WHERE w.buyer = t.buyer AND w.wins = t.wins
		  AND w.total_amount = t.total_amount AND w.name IS NOT DISTINCT FROM t.name);
	INSERT INTO top_buyers
		SELECT * FROM (SELECT s.buyer, u.name, s.wins, s.total_amount
			       FROM buyer_stats s LEFT JOIN users u ON u.id = s.buyer
			       ORDER BY s.wins DESC, s.total_amount DESC, s.buyer LIMIT 10) w
		WHERE NOT EXISTS (SELECT 1 FROM top_buyers t WHERE t.buyer = w.buyer)
		ORDER BY w.wins DESC, w.total_amount DESC, w.buyer;
END $$;

-- Apply changes of winning rows (buyer, +-1 win, +-amount) to buyer_stats,
-- auction_stats and top_buyers.
CREATE OR REPLACE FUNCTION apply_win_deltas(p_buyers int8[], p_wins int8[], p_amounts int8[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	-- The lock on top_buyers serialises every transaction that changes
	-- these tables, in commit order, so the last one always sees all the
	-- others' committed changes: the top ten stays exact, and two closes
	-- cannot deadlock on buyer rows.
	LOCK TABLE top_buyers IN SHARE ROW EXCLUSIVE MODE;
	INSERT INTO buyer_stats AS s (buyer, wins, total_amount)
		SELECT d.buyer, sum(d.wins), sum(d.amount)
		FROM unnest(p_buyers, p_wins, p_amounts) AS d (buyer, wins, amount)
		WHERE d.buyer IS NOT NULL
		GROUP BY d.buyer ORDER BY d.buyer
	ON CONFLICT (buyer) DO UPDATE
		SET wins = s.wins + EXCLUDED.wins,
		    total_amount = s.total_amount + EXCLUDED.total_amount
		WHERE EXCLUDED.wins <> 0 OR EXCLUDED.total_amount <> 0;
	DELETE FROM buyer_stats WHERE wins = 0 AND buyer = ANY (p_buyers);
	UPDATE auction_stats s SET wins = s.wins + d.wins, win_amount = s.win_amount + d.amount
		FROM (SELECT coalesce(sum(w), 0) AS wins, coalesce(sum(m), 0) AS amount
		      FROM unnest(p_wins, p_amounts) AS x (w, m)) d
		WHERE s.id = 1 AND (d.wins <> 0 OR d.amount <> 0);
	PERFORM refresh_top_buyers();
END $$;

-- One statement's changes to winning_bids.
CREATE OR REPLACE FUNCTION winning_bids_after() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	b int8[];
	w int8[];
	m int8[];
BEGIN
	IF TG_OP = 'INSERT' THEN
		SELECT array_agg(buyer), array_agg(1::int8), array_agg(amount::int8)
			INTO b, w, m FROM new_rows;
	ELSIF TG_OP = 'DELETE' THEN
		SELECT array_agg(buyer), array_agg(-1::int8), array_agg(-amount::int8)
			INTO b, w, m FROM old_rows;
	ELSE
		SELECT array_agg(buyer), array_agg(wins), array_agg(amount) INTO b, w, m
			FROM (SELECT buyer, 1::int8 AS wins, amount::int8 AS amount FROM new_rows
			      UNION ALL
			      SELECT buyer, -1::int8, -amount::int8 FROM old_rows) x;
	END IF;
	IF b IS NOT NULL THEN
		PERFORM apply_win_deltas(b, w, m);
	END IF;
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS winning_bids_after_insert ON winning_bids;
CREATE TRIGGER winning_bids_after_insert AFTER INSERT ON winning_bids
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION winning_bids_after();
DROP TRIGGER IF EXISTS winning_bids_after_update ON winning_bids;
CREATE TRIGGER winning_bids_after_update AFTER UPDATE ON winning_bids
	REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION winning_bids_after();
DROP TRIGGER IF EXISTS winning_bids_after_delete ON winning_bids;
CREATE TRIGGER winning_bids_after_delete AFTER DELETE ON winning_bids
	REFERENCING OLD TABLE AS old_rows
	FOR EACH STATEMENT EXECUTE FUNCTION winning_bids_after();

-- ---- maintenance ------------------------------------------------------------------

-- Empty the auctions and everything derived from them (organizations,
-- users and accounts stay).  Streams as TRUNCATE.
CREATE OR REPLACE FUNCTION reset_auction_house() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	TRUNCATE bids, open_auctions, auctions, highest_bid_per_auction, winning_bids,
		 buyer_stats, top_buyers;
	UPDATE auction_stats SET auctions = 0, open_auctions = 0, bids = 0, on_time_bids = 0,
		wins = 0, win_amount = 0 WHERE id = 1;
END $$;

-- Check the incremental state against Materialize's published definitions computed from
-- the base tables: one row per derived table with the number of rows that
-- differ (0 everywhere when all is well).  tests/daemon_pg.py calls it after
-- a concurrent load.
CREATE OR REPLACE FUNCTION check_auction_house() RETURNS TABLE (what text, problems int8)
LANGUAGE sql STABLE AS $$
	WITH want_high AS (
		SELECT DISTINCT ON (auction_id) auction_id, bid_id, buyer, seller, item, amount,
		       bid_time, end_time
		FROM on_time_bids ORDER BY auction_id, amount DESC, bid_time, bid_id),
	want_win AS (
		SELECT * FROM want_high h
		WHERE NOT EXISTS (SELECT 1 FROM open_auctions o WHERE o.auction_id = h.auction_id)),
	want_stats AS (
		SELECT buyer, count(*) AS wins, sum(amount) AS total_amount FROM want_win
		WHERE buyer IS NOT NULL GROUP BY buyer),
	want_top AS (
		SELECT s.buyer, u.name, s.wins, s.total_amount
		FROM want_stats s LEFT JOIN users u ON u.id = s.buyer
		ORDER BY s.wins DESC, s.total_amount DESC, s.buyer LIMIT 10)
	SELECT 'highest_bid_per_auction', count(*) FROM (
		(SELECT * FROM want_high EXCEPT ALL SELECT * FROM highest_bid_per_auction)
		UNION ALL
		(SELECT * FROM highest_bid_per_auction EXCEPT ALL SELECT * FROM want_high)) x
	UNION ALL
	SELECT 'winning_bids', count(*) FROM (
		(SELECT * FROM want_win EXCEPT ALL SELECT * FROM winning_bids)
		UNION ALL
		(SELECT * FROM winning_bids EXCEPT ALL SELECT * FROM want_win)) x
	UNION ALL
	SELECT 'buyer_stats', count(*) FROM (
		(SELECT * FROM want_stats EXCEPT ALL SELECT * FROM buyer_stats)
		UNION ALL
		(SELECT * FROM buyer_stats EXCEPT ALL SELECT * FROM want_stats)) x
	UNION ALL
	SELECT 'top_buyers', count(*) FROM (
		(SELECT * FROM want_top EXCEPT ALL SELECT * FROM top_buyers)
		UNION ALL
		(SELECT * FROM top_buyers EXCEPT ALL SELECT * FROM want_top)) x
	UNION ALL
	SELECT 'auction_stats', count(*) FROM auction_stats s
	WHERE s.auctions <> (SELECT count(*) FROM auctions)
	   OR s.open_auctions <> (SELECT count(*) FROM open_auctions)
	   OR s.bids <> (SELECT count(*) FROM bids)
	   OR s.on_time_bids <> (SELECT count(*) FROM on_time_bids)
	   OR s.wins <> (SELECT count(*) FROM winning_bids)
	   OR s.win_amount <> (SELECT coalesce(sum(amount), 0) FROM winning_bids)
$$;

COMMIT;
