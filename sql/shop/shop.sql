-- shop.sql - the e-commerce shop (items, users, purchases, pageviews) for
-- PostgreSQL 15, with its views kept incrementally as TABLES by triggers
-- (logical replication streams tables, not views).  Load it into a database
-- of its own: its `users` is not the auction house's.
--
--   createdb shop && psql -d shop -v ON_ERROR_STOP=1 -f sql/shop/shop.sql   (idempotent)
--
-- Base tables (what tailgate-shopgen writes):
--   items      id, name, category, price, inventory
--   users      id, name, email, created_at
--   purchases  id, user_id, item_id, quantity, purchase_price, created_at
--   pageviews  id, user_id, url ('/products/17', '/', '/cart'), channel, received_at
-- Kept by triggers (what tailgate streams), each with its definition over
-- the base tables in check_shop() below:
--   item_pageviews     item_id, pageviews: product pageviews per item (the
--                      item id is the number in '/products/N'; other urls
--                      count for no item)
--   purchase_summary   item_id, revenue, orders, items_sold
--   item_summary       one row per item: item_id, name, category, inventory,
--                      items_sold, orders, revenue, pageviews, conversion_rate
--                      (orders / pageviews; NULL while it has no pageview)
--   low_stock          item_id, name, category, inventory, threshold: items
--                      whose inventory is below shop_config.low_stock_threshold
--   orders_per_minute  minute, orders, items_sold, revenue: purchases per
--                      minute of created_at, for the last 60 minutes
--                      (expire_orders_per_minute() drops older minutes; the
--                      load generator calls it every tick)
--
-- Purchases take stock: buy() (the load generator's entry point) locks the
-- items in id order, skips an order the stock cannot cover, and inserts the
-- purchase at the item's price; a BEFORE INSERT trigger on purchases takes
-- the quantity off items.inventory and refuses a purchase the stock cannot
-- cover, whoever inserts it.  The warehouse (tools/warehouse.py) puts stock
-- back with UPDATE items SET inventory = inventory + N.
--
-- Exactness.  Inserts into purchases and pageviews (the generator's work)
-- fold each statement's rows into the derived tables with one upsert per
-- touched row (statement-level triggers with transition tables; the row
-- locks of the upserts make concurrent writers add up exactly).  An UPDATE,
-- DELETE or TRUNCATE of purchases or pageviews, which the generator never
-- does, rebuilds the derived tables from the base tables as a difference
-- (refresh_shop()): simple beats fast on that path.  Changes of items
-- (inventory, name, price, new items) are applied per row.  check_shop()
-- returns, per derived table, how many rows differ from its definition.
--
-- Lock order, to keep the generator and the warehouse free of deadlocks:
-- items rows first (in id order), then the derived rows.  buy() and the
-- purchases trigger follow it; a pageviews statement takes derived rows
-- only; the warehouse updates one items row per transaction.  The generator
-- sends purchases and pageviews in separate transactions.
--
-- Every table a feed follows (and every base table) is REPLICA IDENTITY
-- FULL: tailgate turns an UPDATE into "delete the old row, insert the new
-- one" and needs the old row's every column.

SET client_min_messages = warning;
BEGIN;

-- ---- base tables -------------------------------------------------------------

CREATE TABLE IF NOT EXISTS items (
	id        int8 PRIMARY KEY,
	name      text NOT NULL,
	category  text NOT NULL,
	price     numeric(10, 2) NOT NULL CHECK (price >= 0),
	inventory int4 NOT NULL CHECK (inventory >= 0)
);

CREATE TABLE IF NOT EXISTS users (
	id         int8 PRIMARY KEY,
	name       text NOT NULL,
	email      text,
	created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS purchases (
	id             bigserial PRIMARY KEY,
	user_id        int8 REFERENCES users (id),
	item_id        int8 NOT NULL REFERENCES items (id),
	quantity       int4 NOT NULL CHECK (quantity > 0),
	purchase_price numeric(12, 2) NOT NULL,   -- what was paid: price * quantity
	created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS purchases_item_id ON purchases (item_id);
CREATE INDEX IF NOT EXISTS purchases_created_at ON purchases (created_at);

CREATE TABLE IF NOT EXISTS pageviews (
	id          bigserial PRIMARY KEY,
	user_id     int8,
	url         text NOT NULL,
	channel     text NOT NULL,
	received_at timestamptz NOT NULL DEFAULT now()
);

-- The settings: one row.  Changing the threshold rebuilds low_stock.
CREATE TABLE IF NOT EXISTS shop_config (
	id                  int4 PRIMARY KEY CHECK (id = 1),
	low_stock_threshold int4 NOT NULL DEFAULT 10 CHECK (low_stock_threshold >= 0)
);
INSERT INTO shop_config (id) VALUES (1) ON CONFLICT DO NOTHING;

-- ---- derived tables ------------------------------------------------------------

CREATE TABLE IF NOT EXISTS item_pageviews (
	item_id   int8 PRIMARY KEY,
	pageviews int8 NOT NULL
);

CREATE TABLE IF NOT EXISTS purchase_summary (
	item_id    int8 PRIMARY KEY,
	revenue    numeric(14, 2) NOT NULL,
	orders     int8 NOT NULL,
	items_sold int8 NOT NULL
);

CREATE TABLE IF NOT EXISTS item_summary (
	item_id         int8 PRIMARY KEY,
	name            text NOT NULL,
	category        text NOT NULL,
	inventory       int4 NOT NULL,
	items_sold      int8 NOT NULL DEFAULT 0,
	orders          int8 NOT NULL DEFAULT 0,
	revenue         numeric(14, 2) NOT NULL DEFAULT 0,
	pageviews       int8 NOT NULL DEFAULT 0,
	conversion_rate float8          -- orders / pageviews, NULL without pageviews
);

CREATE TABLE IF NOT EXISTS low_stock (
	item_id   int8 PRIMARY KEY,
	name      text NOT NULL,
	category  text NOT NULL,
	inventory int4 NOT NULL,
	threshold int4 NOT NULL
);

CREATE TABLE IF NOT EXISTS orders_per_minute (
	minute     timestamptz PRIMARY KEY,
	orders     int8 NOT NULL,
	items_sold int8 NOT NULL,
	revenue    numeric(14, 2) NOT NULL
);

ALTER TABLE items REPLICA IDENTITY FULL;
ALTER TABLE users REPLICA IDENTITY FULL;
ALTER TABLE purchases REPLICA IDENTITY FULL;
ALTER TABLE pageviews REPLICA IDENTITY FULL;
ALTER TABLE shop_config REPLICA IDENTITY FULL;
ALTER TABLE item_pageviews REPLICA IDENTITY FULL;
ALTER TABLE purchase_summary REPLICA IDENTITY FULL;
ALTER TABLE item_summary REPLICA IDENTITY FULL;
ALTER TABLE low_stock REPLICA IDENTITY FULL;
ALTER TABLE orders_per_minute REPLICA IDENTITY FULL;

-- ---- the definitions ---------------------------------------------------------------

-- The item a pageview's url is about ('/products/17' -> 17), NULL for others.
CREATE OR REPLACE FUNCTION url_item_id(url text) RETURNS int8
LANGUAGE sql IMMUTABLE AS $$
	SELECT (regexp_match(url, '^/products/(\d{1,18})(?:[/?#]|$)'))[1]::int8
$$;

CREATE OR REPLACE FUNCTION conversion_rate(orders int8, pageviews int8) RETURNS float8
LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE WHEN pageviews > 0 THEN orders::float8 / pageviews::float8 END
$$;

-- The first minute orders_per_minute keeps at time t (60 minutes, this one
-- included).
CREATE OR REPLACE FUNCTION orders_window_start(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
	SELECT date_trunc('minute', t) - interval '59 minutes'
$$;

-- Each derived table's definition over the base tables, as plain views:
-- refresh_shop() copies them, check_shop() compares with them.  (The seed's
-- own definitions, for Materialize, are sql/materialize/shop.sql.)
CREATE OR REPLACE VIEW item_pageviews_def AS
	SELECT url_item_id(url) AS item_id, count(*) AS pageviews
	FROM pageviews WHERE url_item_id(url) IS NOT NULL GROUP BY 1;

CREATE OR REPLACE VIEW purchase_summary_def AS
	SELECT item_id, sum(purchase_price)::numeric(14, 2) AS revenue, count(id) AS orders,
	       sum(quantity)::int8 AS items_sold
	FROM purchases GROUP BY item_id;

CREATE OR REPLACE VIEW item_summary_def AS
	SELECT i.id AS item_id, i.name, i.category, i.inventory,
	       coalesce(p.items_sold, 0) AS items_sold, coalesce(p.orders, 0) AS orders,
	       coalesce(p.revenue, 0)::numeric(14, 2) AS revenue,
	       coalesce(v.pageviews, 0) AS pageviews,
	       conversion_rate(coalesce(p.orders, 0), coalesce(v.pageviews, 0)) AS conversion_rate
	FROM items i
	LEFT JOIN purchase_summary_def p ON p.item_id = i.id
	LEFT JOIN item_pageviews_def v ON v.item_id = i.id;

CREATE OR REPLACE VIEW low_stock_def AS
	SELECT i.id AS item_id, i.name, i.category, i.inventory, c.low_stock_threshold AS threshold
	FROM items i, shop_config c
	WHERE c.id = 1 AND i.inventory < c.low_stock_threshold;

-- As of now(): call expire_orders_per_minute() in the same transaction first.
CREATE OR REPLACE VIEW orders_per_minute_def AS
	SELECT date_trunc('minute', created_at) AS minute, count(*) AS orders,
	       sum(quantity)::int8 AS items_sold, sum(purchase_price)::numeric(14, 2) AS revenue
	FROM purchases
	WHERE created_at >= orders_window_start(now())
	GROUP BY 1;

-- ---- items -------------------------------------------------------------------------

-- One item's rows in item_summary (name, category, inventory) and low_stock.
CREATE OR REPLACE FUNCTION items_after_row() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	threshold int4;
BEGIN
	IF TG_OP = 'DELETE' THEN
		DELETE FROM item_summary WHERE item_id = OLD.id;
		DELETE FROM low_stock WHERE item_id = OLD.id;
		RETURN NULL;
	END IF;
	IF TG_OP = 'UPDATE' AND NEW.id <> OLD.id THEN
		DELETE FROM item_summary WHERE item_id = OLD.id;
		DELETE FROM low_stock WHERE item_id = OLD.id;
	END IF;
	INSERT INTO item_summary AS s (item_id, name, category, inventory)
		VALUES (NEW.id, NEW.name, NEW.category, NEW.inventory)
	ON CONFLICT (item_id) DO UPDATE
		SET name = EXCLUDED.name, category = EXCLUDED.category, inventory = EXCLUDED.inventory
		WHERE (s.name, s.category, s.inventory)
		      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.category, EXCLUDED.inventory);
	SELECT low_stock_threshold INTO threshold FROM shop_config WHERE id = 1;
	IF NEW.inventory < threshold THEN
		INSERT INTO low_stock AS l VALUES (NEW.id, NEW.name, NEW.category, NEW.inventory, threshold)
		ON CONFLICT (item_id) DO UPDATE
			SET name = EXCLUDED.name, category = EXCLUDED.category,
			    inventory = EXCLUDED.inventory, threshold = EXCLUDED.threshold
			WHERE l IS DISTINCT FROM EXCLUDED;
	ELSE
		DELETE FROM low_stock WHERE item_id = NEW.id;
	END IF;
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS items_after_row ON items;
CREATE TRIGGER items_after_row AFTER INSERT OR UPDATE OR DELETE ON items
	FOR EACH ROW EXECUTE FUNCTION items_after_row();

-- A new threshold: low_stock again from the items, as a difference.
CREATE OR REPLACE FUNCTION refresh_low_stock() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	DELETE FROM low_stock l WHERE NOT EXISTS (
		SELECT 1 FROM low_stock_def d WHERE d.item_id = l.item_id AND d.name = l.name
		  AND d.category = l.category AND d.inventory = l.inventory
		  AND d.threshold = l.threshold);
	INSERT INTO low_stock SELECT d.* FROM low_stock_def d
		WHERE NOT EXISTS (SELECT 1 FROM low_stock l WHERE l.item_id = d.item_id)
		ORDER BY d.item_id;
END $$;

CREATE OR REPLACE FUNCTION shop_config_after() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM refresh_low_stock();
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS shop_config_after ON shop_config;
CREATE TRIGGER shop_config_after AFTER UPDATE ON shop_config
	FOR EACH STATEMENT EXECUTE FUNCTION shop_config_after();

-- ---- purchases ---------------------------------------------------------------------

-- A purchase takes its quantity off the item's inventory, or is refused.
CREATE OR REPLACE FUNCTION purchases_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	UPDATE items SET inventory = inventory - NEW.quantity
		WHERE id = NEW.item_id AND inventory >= NEW.quantity;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'item % cannot cover a purchase of %: out of stock or unknown',
			NEW.item_id, NEW.quantity
			USING ERRCODE = 'check_violation';
	END IF;
	RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS purchases_before_insert ON purchases;
CREATE TRIGGER purchases_before_insert BEFORE INSERT ON purchases
	FOR EACH ROW EXECUTE FUNCTION purchases_before_insert();

-- One statement's new purchases into purchase_summary, item_summary and
-- orders_per_minute: one upsert per item and per minute.
CREATE OR REPLACE FUNCTION purchases_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO purchase_summary AS s (item_id, revenue, orders, items_sold)
		SELECT item_id, sum(purchase_price), count(*), sum(quantity)
		FROM new_rows GROUP BY item_id ORDER BY item_id
	ON CONFLICT (item_id) DO UPDATE
		SET revenue = s.revenue + EXCLUDED.revenue, orders = s.orders + EXCLUDED.orders,
		    items_sold = s.items_sold + EXCLUDED.items_sold;
	UPDATE item_summary s
		SET items_sold = s.items_sold + d.items_sold, orders = s.orders + d.orders,
		    revenue = s.revenue + d.revenue,
		    conversion_rate = conversion_rate(s.orders + d.orders, s.pageviews)
		FROM (SELECT item_id, sum(quantity) AS items_sold, count(*) AS orders,
			     sum(purchase_price) AS revenue
		      FROM new_rows GROUP BY item_id) d
		WHERE s.item_id = d.item_id;
	INSERT INTO orders_per_minute AS m (minute, orders, items_sold, revenue)
		SELECT date_trunc('minute', created_at), count(*), sum(quantity), sum(purchase_price)
		FROM new_rows WHERE created_at >= orders_window_start(now())
		GROUP BY 1 ORDER BY 1
	ON CONFLICT (minute) DO UPDATE
		SET orders = m.orders + EXCLUDED.orders, items_sold = m.items_sold + EXCLUDED.items_sold,
		    revenue = m.revenue + EXCLUDED.revenue;
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS purchases_after_insert ON purchases;
CREATE TRIGGER purchases_after_insert AFTER INSERT ON purchases
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION purchases_after_insert();

-- Drop the minutes that left the 60-minute window.  Returns how many.
CREATE OR REPLACE FUNCTION expire_orders_per_minute() RETURNS int8
LANGUAGE plpgsql AS $$
DECLARE
	n int8;
BEGIN
	DELETE FROM orders_per_minute WHERE minute < orders_window_start(now());
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END $$;

-- Orders, as the load generator places them: for each (user, item,
-- quantity), in item order, a purchase at the item's current price when the
-- stock covers it; an order it cannot cover is skipped.  Returns the number
-- of purchases made.
CREATE OR REPLACE FUNCTION buy(p_users int8[], p_items int8[], p_quantities int4[])
RETURNS int8 LANGUAGE plpgsql AS $$
DECLARE
	o record;
	k int8;
	n int8 := 0;
BEGIN
	-- Lock the items first, in id order (the lock order of the header).
	PERFORM 1 FROM items WHERE id = ANY (p_items) ORDER BY id FOR NO KEY UPDATE;
	FOR o IN SELECT u, i, q FROM unnest(p_users, p_items, p_quantities) AS x (u, i, q)
		 ORDER BY i LOOP
		-- Each statement sees the inventory the previous ones left.
		INSERT INTO purchases (user_id, item_id, quantity, purchase_price)
			SELECT o.u, it.id, o.q, it.price * o.q FROM items it
			WHERE it.id = o.i AND o.q > 0 AND it.inventory >= o.q;
		GET DIAGNOSTICS k = ROW_COUNT;
		n := n + k;
	END LOOP;
	RETURN n;
END $$;

-- ---- pageviews ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pageviews_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO item_pageviews AS v (item_id, pageviews)
		SELECT url_item_id(url), count(*) FROM new_rows
		WHERE url_item_id(url) IS NOT NULL
		GROUP BY 1 ORDER BY 1
	ON CONFLICT (item_id) DO UPDATE SET pageviews = v.pageviews + EXCLUDED.pageviews;
	UPDATE item_summary s
		SET pageviews = s.pageviews + d.n,
		    conversion_rate = conversion_rate(s.orders, s.pageviews + d.n)
		FROM (SELECT url_item_id(url) AS item_id, count(*) AS n FROM new_rows
		      WHERE url_item_id(url) IS NOT NULL GROUP BY 1) d
		WHERE s.item_id = d.item_id;
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS pageviews_after_insert ON pageviews;
CREATE TRIGGER pageviews_after_insert AFTER INSERT ON pageviews
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION pageviews_after_insert();

-- ---- the general path: rebuild as a difference -------------------------------------

-- Make table `target` equal to view `def` by deleting the rows not in it
-- and inserting the missing ones (rows that did not change stay; a
-- changed row is one delete and one insert, as a stream carries it).
CREATE OR REPLACE FUNCTION sync_table(target regclass, def regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('DELETE FROM %s t WHERE NOT EXISTS '
		       '(SELECT 1 FROM %s d WHERE row(d.*) IS NOT DISTINCT FROM row(t.*))',
		       target, def);
	EXECUTE format('INSERT INTO %s SELECT d.* FROM %s d WHERE NOT EXISTS '
		       '(SELECT 1 FROM %s t WHERE row(d.*) IS NOT DISTINCT FROM row(t.*))',
		       target, def, target);
END $$;

-- Every derived table from the base tables.  Serialised by a lock on
-- item_summary, which every writer of it takes anyway.
CREATE OR REPLACE FUNCTION refresh_shop() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	LOCK TABLE item_pageviews, purchase_summary, item_summary, low_stock, orders_per_minute
		IN SHARE ROW EXCLUSIVE MODE;
	PERFORM expire_orders_per_minute();
	PERFORM sync_table('item_pageviews', 'item_pageviews_def');
	PERFORM sync_table('purchase_summary', 'purchase_summary_def');
	PERFORM sync_table('item_summary', 'item_summary_def');
	PERFORM sync_table('low_stock', 'low_stock_def');
	PERFORM sync_table('orders_per_minute', 'orders_per_minute_def');
END $$;

CREATE OR REPLACE FUNCTION shop_refresh_after() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM refresh_shop();
	RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS purchases_refresh ON purchases;
CREATE TRIGGER purchases_refresh AFTER UPDATE OR DELETE OR TRUNCATE ON purchases
	FOR EACH STATEMENT EXECUTE FUNCTION shop_refresh_after();
DROP TRIGGER IF EXISTS pageviews_refresh ON pageviews;
CREATE TRIGGER pageviews_refresh AFTER UPDATE OR DELETE OR TRUNCATE ON pageviews
	FOR EACH STATEMENT EXECUTE FUNCTION shop_refresh_after();

-- ---- maintenance -------------------------------------------------------------------

-- Empty purchases and pageviews (items keep their inventory; users stay).
CREATE OR REPLACE FUNCTION reset_shop() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	TRUNCATE purchases, pageviews;   -- the refresh trigger empties the sums
END $$;

-- Each derived table against its definition: one row per table with the
-- number of rows that differ (0 everywhere when all is well).  Drops the
-- minutes that left the window first, so orders_per_minute is compared at
-- this transaction's now().  tests/shop_views.py calls it after a load.
CREATE OR REPLACE FUNCTION check_shop() RETURNS TABLE (what text, problems int8)
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM expire_orders_per_minute();
	RETURN QUERY
	SELECT 'item_pageviews', count(*) FROM (
		(SELECT * FROM item_pageviews_def EXCEPT ALL SELECT * FROM item_pageviews)
		UNION ALL
		(SELECT * FROM item_pageviews EXCEPT ALL SELECT * FROM item_pageviews_def)) x
	UNION ALL
	SELECT 'purchase_summary', count(*) FROM (
		(SELECT * FROM purchase_summary_def EXCEPT ALL SELECT * FROM purchase_summary)
		UNION ALL
		(SELECT * FROM purchase_summary EXCEPT ALL SELECT * FROM purchase_summary_def)) x
	UNION ALL
	SELECT 'item_summary', count(*) FROM (
		(SELECT * FROM item_summary_def EXCEPT ALL SELECT * FROM item_summary)
		UNION ALL
		(SELECT * FROM item_summary EXCEPT ALL SELECT * FROM item_summary_def)) x
	UNION ALL
	SELECT 'low_stock', count(*) FROM (
		(SELECT * FROM low_stock_def EXCEPT ALL SELECT * FROM low_stock)
		UNION ALL
		(SELECT * FROM low_stock EXCEPT ALL SELECT * FROM low_stock_def)) x
	UNION ALL
	SELECT 'orders_per_minute', count(*) FROM (
		(SELECT * FROM orders_per_minute_def EXCEPT ALL SELECT * FROM orders_per_minute)
		UNION ALL
		(SELECT * FROM orders_per_minute EXCEPT ALL SELECT * FROM orders_per_minute_def)) x;
END $$;

COMMIT;
