-- migrate:up
UPDATE orders SET total = total * 100;

-- migrate:down
-- Amounts were converted to cents: there is no way back.
