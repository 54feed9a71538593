-- migrate:up
CREATE TABLE orders (
  id INTEGER PRIMARY KEY,
  total INTEGER NOT NULL,
  created_at VARCHAR(32) NOT NULL
);
INSERT INTO orders (id, total, created_at) VALUES (1, 1250, '2026-11-20'), (2, 990, '2026-11-21');

-- migrate:down
DROP TABLE orders;
