class ConvertTotalsToCents < ActiveRecord::Migration[6.1]
  def up
    execute "UPDATE orders SET total = total * 100"
  end

  def down
    raise ActiveRecord::IrreversibleMigration, "the totals were converted to cents; the old amounts are gone"
  end
end
