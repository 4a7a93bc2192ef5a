-- auction_house.sql - Materialize's auction house on Materialize: the AUCTION
-- load generator and the views tailgate streams (Materialize's published views, verbatim in
-- substance).  Run it once with psql against Materialize:
--
--   psql "postgres://USER@HOST:6875/materialize" -v ON_ERROR_STOP=1 \
--        -f sql/materialize/auction_house.sql
--
-- then start tailgated with sql/materialize/tailgated.conf.  RETAIN HISTORY
-- keeps a few minutes of the views' history so that a reconnecting daemon
-- can resume with SUBSCRIBE ... AS OF its last timestamp instead of taking
-- a new snapshot.

CREATE SOURCE IF NOT EXISTS auction_house_source
	FROM LOAD GENERATOR AUCTION (TICK INTERVAL '100ms')
	FOR ALL TABLES;

CREATE VIEW on_time_bids AS
	SELECT
		bids.id       AS bid_id,
		auctions.id   AS auction_id,
		auctions.seller,
		bids.buyer,
		auctions.item,
		bids.bid_time,
		auctions.end_time,
		bids.amount
	FROM bids
	JOIN auctions ON bids.auction_id = auctions.id
	WHERE bids.bid_time < auctions.end_time;

CREATE VIEW highest_bid_per_auction AS
	SELECT grp.auction_id, bid_id, buyer, seller, item, amount, bid_time, end_time FROM
		(SELECT DISTINCT auction_id FROM on_time_bids) grp,
		LATERAL (
			SELECT * FROM on_time_bids
			WHERE auction_id = grp.auction_id
			ORDER BY amount DESC LIMIT 1
		);

CREATE VIEW winning_bids AS
	SELECT * FROM highest_bid_per_auction
	WHERE end_time < mz_now();

CREATE INDEX winning_bids_idx_amount ON winning_bids (amount);

-- Not in Materialize's example: keep ten minutes of history so tailgated can resume a
-- SUBSCRIBE AS OF its last timestamp after a reconnect.
ALTER INDEX winning_bids_idx_amount SET (RETAIN HISTORY FOR '10m');

-- The demo page's other feeds (the PostgreSQL tables of the same names in
-- sql/auction_house.sql have the same columns).
CREATE VIEW top_buyers AS
	SELECT w.buyer, u.name, count(*) AS wins, sum(w.amount) AS total_amount
	FROM winning_bids w LEFT JOIN users u ON u.id = w.buyer
	GROUP BY w.buyer, u.name
	ORDER BY wins DESC, total_amount DESC, w.buyer
	LIMIT 10;
CREATE DEFAULT INDEX top_buyers_idx ON top_buyers;
ALTER INDEX top_buyers_idx SET (RETAIN HISTORY FOR '10m');

CREATE VIEW open_auctions AS
	SELECT id FROM auctions WHERE mz_now() <= end_time;

CREATE VIEW auction_stats AS
	SELECT 1 AS id,
	       (SELECT count(*) FROM auctions) AS auctions,
	       (SELECT count(*) FROM open_auctions) AS open_auctions,
	       (SELECT count(*) FROM bids) AS bids,
	       (SELECT count(*) FROM on_time_bids) AS on_time_bids,
	       (SELECT count(*) FROM winning_bids) AS wins,
	       (SELECT coalesce(sum(amount), 0) FROM winning_bids) AS win_amount;
CREATE DEFAULT INDEX auction_stats_idx ON auction_stats;
ALTER INDEX auction_stats_idx SET (RETAIN HISTORY FOR '10m');
