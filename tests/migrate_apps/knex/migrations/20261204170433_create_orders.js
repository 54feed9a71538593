/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.up = async function(knex) {
  await knex.schema.createTable('orders', (t) => {
    t.integer('id').primary();
    t.integer('total').notNullable();
    t.string('created_at', 32).notNullable();
  });
  await knex('orders').insert([
    { id: 1, total: 1250, created_at: '2026-11-20' },
    { id: 2, total: 990, created_at: '2026-11-21' },
  ]);
};

/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.down = function(knex) {
  return knex.schema.dropTable('orders');
};
