/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.up = async function(knex) {
  await knex.schema.alterTable('orders', (t) => {
    t.string('coupon', 40).nullable();
  });
  await knex('orders').where({ id: 1 }).update({ coupon: 'WELCOME' });
};

/**
 * @param { import("knex").Knex } knex
 * @returns { Promise<void> }
 */
exports.down = function(knex) {
  return knex.schema.alterTable('orders', (t) => {
    t.dropColumn('coupon');
  });
};
