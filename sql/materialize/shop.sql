-- shop.sql - the e-commerce shop on Materialize: the seed's views over the
-- shop's MySQL tables, brought in by Debezium through Kafka.  Run it once
-- with psql against Materialize, after the sources below exist:
--
--   psql "postgres://USER@HOST:6875/materialize" -v ON_ERROR_STOP=1 \
--        -f sql/materialize/shop.sql
--
-- then start tailgated with sql/materialize/shop.conf (the feeds of
-- sql/shop/tailgated.conf with `view =` instead of `table =`).
--
-- Sources it needs (create them first; names are the ones used below):
--
--   * a Kafka connection to the broker Debezium writes to, and a schema
--     registry connection for its Avro:
--       CREATE CONNECTION kafka_conn TO KAFKA (BROKER 'BROKER:9092');
--       CREATE CONNECTION csr_conn TO CONFLUENT SCHEMA REGISTRY (URL 'http://REGISTRY:8081');
--   * items, users and purchases: the MySQL tables (shop.items, shop.users,
--     shop.purchases), captured by Debezium's MySQL connector into the
--     topics mysql.shop.items, mysql.shop.users, mysql.shop.purchases, read
--     with ENVELOPE DEBEZIUM so updates and deletes apply (items' inventory
--     changes with every purchase and restock).  Columns as the PostgreSQL
--     tables of sql/shop/shop.sql: items (id, name, category, price,
--     inventory), users (id, name, email, created_at), purchases (id,
--     user_id, item_id, quantity, purchase_price, created_at).
--   * pageviews: JSON events on the Kafka topic `pageviews`, one per view,
--     {"user_id": 3, "url": "/products/17", "channel": "search",
--      "received_at": 1700000000}, append-only (ENVELOPE NONE).
--
-- The low-stock threshold is a constant here (10, as shop_config's default
-- in the PostgreSQL version); orders_per_minute's 60-minute window moves
-- with mz_now(), where PostgreSQL needs expire_orders_per_minute().
-- Each view's columns are the PostgreSQL table's of the same name, so the
-- dashboard (htdocs/shop.html) works unchanged on either upstream.

CREATE SOURCE IF NOT EXISTS items
	FROM KAFKA CONNECTION kafka_conn (TOPIC 'mysql.shop.items')
	FORMAT AVRO USING CONFLUENT SCHEMA REGISTRY CONNECTION csr_conn
	ENVELOPE DEBEZIUM;

CREATE SOURCE IF NOT EXISTS users
	FROM KAFKA CONNECTION kafka_conn (TOPIC 'mysql.shop.users')
	FORMAT AVRO USING CONFLUENT SCHEMA REGISTRY CONNECTION csr_conn
	ENVELOPE DEBEZIUM;

CREATE SOURCE IF NOT EXISTS purchases
	FROM KAFKA CONNECTION kafka_conn (TOPIC 'mysql.shop.purchases')
	FORMAT AVRO USING CONFLUENT SCHEMA REGISTRY CONNECTION csr_conn
	ENVELOPE DEBEZIUM;

CREATE SOURCE IF NOT EXISTS pageviews_raw
	FROM KAFKA CONNECTION kafka_conn (TOPIC 'pageviews')
	FORMAT JSON;

CREATE VIEW pageviews AS
	SELECT (data->>'user_id')::int8 AS user_id,
	       data->>'url' AS url,
	       data->>'channel' AS channel,
	       to_timestamp((data->>'received_at')::float8) AS received_at
	FROM pageviews_raw;

-- The seed's views.

CREATE MATERIALIZED VIEW item_pageviews AS
	SELECT (regexp_match(url, '/products/(\d+)'))[1]::int8 AS item_id,
	       count(*) AS pageviews
	FROM pageviews
	WHERE regexp_match(url, '/products/(\d+)') IS NOT NULL
	GROUP BY 1;

CREATE MATERIALIZED VIEW purchase_summary AS
	SELECT item_id,
	       sum(purchase_price) AS revenue,
	       count(id) AS orders,
	       sum(quantity) AS items_sold
	FROM purchases
	GROUP BY item_id;

CREATE MATERIALIZED VIEW item_summary AS
	SELECT items.id AS item_id,
	       items.name,
	       items.category,
	       items.inventory,
	       coalesce(purchase_summary.items_sold, 0) AS items_sold,
	       coalesce(purchase_summary.orders, 0) AS orders,
	       coalesce(purchase_summary.revenue, 0) AS revenue,
	       coalesce(item_pageviews.pageviews, 0) AS pageviews,
	       CASE WHEN item_pageviews.pageviews > 0
	            THEN coalesce(purchase_summary.orders, 0)::float8 / item_pageviews.pageviews
	       END AS conversion_rate
	FROM items
	LEFT JOIN purchase_summary ON purchase_summary.item_id = items.id
	LEFT JOIN item_pageviews ON item_pageviews.item_id = items.id;

CREATE MATERIALIZED VIEW low_stock AS
	SELECT id AS item_id, name, category, inventory, 10 AS threshold
	FROM items
	WHERE inventory < 10;

CREATE MATERIALIZED VIEW orders_per_minute AS
	SELECT date_trunc('minute', created_at) AS minute,
	       count(*) AS orders,
	       sum(quantity) AS items_sold,
	       sum(purchase_price) AS revenue
	FROM purchases
	WHERE mz_now() <= created_at + INTERVAL '60 minutes'
	GROUP BY 1;

-- Not in the seed: ten minutes of history, so tailgated can resume a
-- SUBSCRIBE AS OF its last timestamp after a reconnect.
ALTER MATERIALIZED VIEW item_summary SET (RETAIN HISTORY FOR '10m');
ALTER MATERIALIZED VIEW low_stock SET (RETAIN HISTORY FOR '10m');
ALTER MATERIALIZED VIEW orders_per_minute SET (RETAIN HISTORY FOR '10m');
ALTER MATERIALIZED VIEW purchase_summary SET (RETAIN HISTORY FOR '10m');
ALTER MATERIALIZED VIEW item_pageviews SET (RETAIN HISTORY FOR '10m');
