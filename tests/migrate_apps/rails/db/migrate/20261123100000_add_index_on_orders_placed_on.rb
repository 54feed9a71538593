class AddIndexOnOrdersPlacedOn < ActiveRecord::Migration[6.1]
  def change
    add_index :orders, :placed_on
  end
end
