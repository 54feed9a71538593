-- migrate:up
ALTER TABLE orders ADD COLUMN coupon VARCHAR(40);
UPDATE orders SET coupon = 'WELCOME' WHERE id = 1;

-- migrate:down
ALTER TABLE orders DROP COLUMN coupon;
