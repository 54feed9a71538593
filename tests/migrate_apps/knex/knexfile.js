// The shop's Knex configuration: the database comes from DATABASE_URL, as on the servers.
// postgres:// or postgresql:// -> pg, mysql:// or mariadb:// -> mysql2.

const url = process.env.DATABASE_URL;
if (!url) {
  throw new Error('DATABASE_URL is not set');
}
const scheme = url.split(':', 1)[0].split('+', 1)[0].toLowerCase();
const client = { postgres: 'pg', postgresql: 'pg', mysql: 'mysql2', mariadb: 'mysql2' }[scheme];
if (!client) {
  throw new Error(`DATABASE_URL scheme ${scheme} is not supported`);
}

/**
 * @type { import("knex").Knex.Config }
 */
module.exports = {
  client,
  connection: url.replace(/^[^:]+:/, client === 'pg' ? 'postgres:' : 'mysql:'),
  pool: { min: 0, max: 2 },
  migrations: {
    directory: './migrations',
    tableName: 'knex_migrations',
  },
};
