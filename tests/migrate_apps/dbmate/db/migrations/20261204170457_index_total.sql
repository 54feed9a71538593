-- migrate:up
CREATE INDEX ix_orders_total ON orders (total);

-- migrate:down
DROP INDEX ix_orders_total;
