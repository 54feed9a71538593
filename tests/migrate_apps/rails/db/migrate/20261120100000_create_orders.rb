class CreateOrders < ActiveRecord::Migration[6.1]
  def change
    create_table :orders do |t|
      t.integer :total, null: false
      t.string :placed_on, null: false
    end

    reversible do |dir|
      dir.up do
        execute "INSERT INTO orders (id, total, placed_on) VALUES (1, 12, '2026-11-20'), (2, 9, '2026-11-21')"
      end
    end
  end
end
