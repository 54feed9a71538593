class AddCouponToOrders < ActiveRecord::Migration[6.1]
  def up
    add_column :orders, :coupon, :string
    execute "UPDATE orders SET coupon = 'WELCOME' WHERE id = 1"
  end

  def down
    remove_column :orders, :coupon
  end
end
