require_relative "boot"

require "rails"
require "active_record/railtie"

Bundler.require(*Rails.groups)

module Shop
  class Application < Rails::Application
    config.load_defaults 6.1
  end
end
